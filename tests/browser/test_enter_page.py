"""The enter page in chromium (issue 15, items 1, 3, 4 and 5): a ui-link signs the
browser in, names the account and goes to the page, with the ticket gone from the
address bar and the history; a used, an expired and a missing ticket each say so
plainly; no console error, no CSP violation, no serious axe finding; the first load
asks the service for the HTML, the stylesheet and the entry module's graph only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.browser.conftest import Axe, PageLog, Shoot, Ui, module_graph, new_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

READY = 'html[data-state="ready"]'


def static_requests(ui: Ui, log: PageLog) -> list[str]:
    """The service's URLs the page asked for, other than API calls."""
    ours = [u.removeprefix(ui.base) for u in log.requests if u.startswith(ui.base)]
    return [u for u in ours if not u.startswith(("/v1/", "/ui/session"))]


def test_a_link_signs_in_and_leaves_no_ticket_behind(ui: Ui, page: Page, page_log: PageLog) -> None:
    org = ui.org()
    alice = ui.user(org, enrolled=False)
    link = ui.link("user", alice.user_id, org)
    page.goto(link)
    page.wait_for_url(ui.base + "/ui/security")
    assert page.evaluate("location.hash") == ""
    # location.replace: the enter page is not in the history either; going back never
    # reaches the link again.
    page.go_back()
    assert "ticket" not in page.url and "/ui/enter" not in page.url, page.url
    # The session is the cookie's: HttpOnly (no script reads it), SameSite=Strict.
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["mfa_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert link.split("#ticket=")[1] not in page_log.text()
    # The security page is its owner's; its own console lines are its tests' business.
    assert page_log.errors_about(ui.base + "/ui/enter") == []
    assert page_log.errors == [] and page_log.csp_violations == []


def test_the_enter_page_names_the_account_it_signed_in(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    """The enter page's last words before it goes on. To read them, the way on is
    answered 204 here (the browser then stays), not by the security page."""
    org = ui.org()
    alice = ui.user(org, enrolled=False)
    link = ui.link("user", alice.user_id, org)
    page.route(ui.base + "/ui/security", lambda route: route.fulfill(status=204))
    page.goto(link)
    page.wait_for_selector(READY)
    assert page.text_content("#enter-account") == alice.user_id
    assert page.text_content("h1") == "Signed in"
    assert f"of {org}" in (page.text_content("main") or "")
    # The ticket left the address bar and the history entry before anything else.
    assert page.evaluate("location.href") == ui.base + "/ui/enter"
    shoot(page, "enter-signed-in")
    axe(page)
    page_log.assert_clean()


def test_first_load_asks_for_html_css_and_the_module_graph_only(
    ui: Ui, page: Page, page_log: PageLog
) -> None:
    page.goto(ui.base + "/ui/enter")
    page.wait_for_selector(READY)
    asked = static_requests(ui, page_log)
    expected = {"/ui/enter", "/ui/static/ui.css", *module_graph("enter.js")}
    assert sorted(asked) == sorted(expected), asked
    assert len(expected) <= 3 + len(module_graph("enter.js")) - 1
    assert not any("favicon" in u for u in page_log.requests), page_log.requests
    # Nothing from anywhere else, either.
    assert all(u.startswith((ui.base, "data:")) for u in page_log.requests), page_log.requests
    page_log.assert_clean()


def test_a_used_link_says_so_and_what_to_do(
    ui: Ui, browser: Browser, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    bob = ui.user(org, enrolled=False)
    link = ui.link("user", bob.user_id, org)
    first = new_page(browser, ui)
    try:
        first.goto(link)
        first.wait_for_url(ui.base + "/ui/security")
    finally:
        first.context.close()
    page.goto(link)
    page.wait_for_selector(READY)
    heading = page.text_content("h1") or ""
    assert "already been used or has expired" in heading
    body = page.text_content("main") or ""
    assert "open the page from there again" in body
    assert page.evaluate("location.hash") == ""
    assert page.context.cookies() == []
    assert page.evaluate("document.activeElement.id") == "enter-title"  # focus on the news
    shoot(page, "enter-used")
    axe(page)
    # The one console line: chromium's own note of the 410 (the answer the page read).
    expected_410 = [t for t in page_log.console_errors if "410" in t]
    assert len(expected_410) == len(page_log.console_errors), page_log.console_errors
    assert page_log.errors == [] and page_log.csp_violations == []


def test_an_expired_link_says_so(ui: Ui, page: Page, page_log: PageLog) -> None:
    org = ui.org()
    carol = ui.user(org, enrolled=False)
    link = ui.link("user", carol.user_id, org)
    ui.expire_link(link)
    page.goto(link)
    page.wait_for_selector(READY)
    assert "already been used or has expired" in (page.text_content("h1") or "")
    assert "only for two minutes" in (page.text_content("main") or "")
    assert page.context.cookies() == []
    assert page_log.errors == [] and page_log.csp_violations == []


def test_no_ticket_explains_where_links_come_from(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    page.goto(ui.base + "/ui/enter")
    page.wait_for_selector(READY)
    assert "Open this page from your application" in (page.text_content("h1") or "")
    assert page.context.cookies() == []
    shoot(page, "enter-no-ticket")
    axe(page)
    page_log.assert_clean()


def test_a_page_without_session_is_a_friendly_html_page(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    """What a browser shows at a page's address without a session (the 401 page), for
    whichever role page exists; the enter page's link is its way in."""
    got = page.goto(ui.base + "/ui/security")
    assert got is not None
    if got.status == 404:
        # Its page owner has not written it on this branch: the 404 page, then.
        assert "No such page" in (page.text_content("h1") or "")
        return
    assert got.status == 401
    assert "open this page again from the link in your application" in (
        (page.text_content("main") or "").lower()
    )
    shoot(page, "ui-unauthenticated")
    axe(page)
    assert page_log.csp_violations == [] and page_log.errors == []
