"""The shared modules the pages build on (api/ui/static/lib), in chromium against the
real service: mountChrome names the account and signs out, api() sends the CSRF token
(a state change with the cookie works) and raises ApiError with the problem, a 401
from any call ends the page with the "session has ended" notice, dom.js puts text in
as text.

They run on the enter page (its link's way on answered 204, so the browser stays
signed in there), with the header's two slots that every page has added."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import PageLog, Ui, User

if TYPE_CHECKING:
    from playwright.sync_api import Page

ADD_CHROME = """() => {
  const header = document.querySelector("header.topbar");
  const account = document.createElement("span");
  account.id = "account";
  account.className = "account";
  const button = document.createElement("button");
  button.id = "sign-out";
  button.type = "button";
  button.className = "button-quiet";
  button.hidden = true;
  button.textContent = "Sign out";
  header.append(account, button);
  const extra = document.createElement("section");
  extra.id = "page-content";
  extra.textContent = "what the page showed";
  document.getElementById("main").append(extra);
}"""
CALL = """async ([method, path, body]) => {
  const { api } = await import("/ui/static/lib/api.js");
  try {
    return { ok: await api(method, path, body === null ? {} : { body }) };
  } catch (error) {
    return { status: error.status, slug: error.slug, problem: error.problem,
             retryAfter: error.retryAfter, name: error.name };
  }
}"""


@pytest.fixture
def signed_in(ui: Ui, page: Page) -> User:
    """A user (not enrolled) signed in on the enter page, the chrome slots added."""
    org = ui.org()
    user = ui.user(org, enrolled=False)
    page.route(ui.base + "/ui/security", lambda route: route.fulfill(status=204))
    page.goto(ui.link("user", user.user_id, org))
    page.wait_for_selector('html[data-state="ready"]')
    page.evaluate(ADD_CHROME)
    return user


def call(page: Page, method: str, path: str, body: object = None) -> dict[str, Any]:
    answer: dict[str, Any] = page.evaluate(CALL, [method, path, body])
    return answer


def test_mount_chrome_names_the_account(page: Page, signed_in: User) -> None:
    session = page.evaluate("async () => (await import('/ui/static/lib/session.js')).mountChrome()")
    assert session["principal_id"] == signed_in.user_id
    assert session["role"] == "user" and session["csrf_token"]
    account = page.text_content("#account") or ""
    assert signed_in.user_id in account and signed_in.org in account
    assert page.is_visible("#sign-out")


def test_api_sends_the_csrf_token_and_raises_the_problem(
    ui: Ui, page: Page, page_log: PageLog, signed_in: User
) -> None:
    status = call(page, "GET", "/v1/me/mfa")
    assert status["ok"]["enrolled"] is False
    # A state change with the cookie: accepted only with the X-CSRF-Token api() sends.
    started = call(page, "POST", "/v1/me/mfa/enrollment", {})
    assert "secret" in started.get("ok", {}), started
    refused = call(page, "POST", "/v1/me/mfa/enrollment/confirm", {"totp": "12"})
    assert refused["name"] == "ApiError"
    assert refused["status"] == 422 and refused["slug"] == "invalid-request", refused
    assert refused["problem"]["type"] == "/problems/invalid-request"
    # The secret stays in the page's memory: nothing of it in the console or the URLs.
    assert started["ok"]["secret"] not in page_log.text()


def test_sign_out_ends_the_session_and_says_so(ui: Ui, page: Page, signed_in: User) -> None:
    page.evaluate("async () => (await import('/ui/static/lib/session.js')).mountChrome()")
    page.click("#sign-out")
    page.wait_for_selector('html[data-session="signed-out"]', state="attached")
    assert "You have signed out" in (page.text_content("main") or "")
    assert page.query_selector("#page-content") is None  # what the page showed is gone
    assert not page.is_visible("#sign-out")
    assert page.text_content("#account") == ""
    # The answer cleared the cookie.
    assert [c for c in page.context.cookies() if c["name"] == "mfa_session"] == []
    # The service agrees: the cookie (had it stayed) opens nothing any more.
    assert call(page, "GET", "/v1/me/mfa")["status"] == 401


def test_a_revoked_session_ends_the_page(ui: Ui, page: Page, signed_in: User) -> None:
    page.evaluate("async () => (await import('/ui/static/lib/session.js')).mountChrome()")
    admin = ui.admin_token(signed_in.org)
    listed = ui.call(
        "GET", f"/v1/org/tokens?principal_id={signed_in.user_id}&include_revoked=false", admin
    )
    assert listed.status == 200, listed.body
    sessions = [t for t in listed.json()["tokens"] if t["kind"] == "session"]
    assert len(sessions) == 1
    revoked = ui.call("DELETE", f"/v1/org/tokens/{sessions[0]['token_id']}", admin)
    assert revoked.status == 204
    assert call(page, "GET", "/v1/me/mfa")["status"] == 401
    page.wait_for_selector('html[data-session="ended"]', state="attached")
    main = page.text_content("main") or ""
    assert "Your session has ended" in main and "from your application" in main
    assert page.query_selector("#page-content") is None
    assert page.evaluate("document.activeElement.classList.contains('notice')")
    # Said to screen readers too (the live region is written a moment later). A
    # function, as the other waits: a bare expression is polled with eval, which
    # the page's CSP refuses whenever the first check comes too early.
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('Your session has ended')"
    )


def test_dom_helpers_put_text_in_as_text(page: Page, signed_in: User) -> None:
    got = page.evaluate(
        """async () => {
      const dom = await import("/ui/static/lib/dom.js");
      const p = dom.el("p", { class: "x", "data-n": 2, hidden: false, title: null },
                       "<b>bold</b>", ["a", null, "b"], false);
      return {
        html: p.outerHTML,
        time: dom.formatTime("2026-12-02T14:05:09.123Z"),
        seconds: dom.formatTime("2026-12-02T14:05:09.123Z", { seconds: true }),
        none: dom.formatTime(null),
      };
    }"""
    )
    assert got["html"] == '<p class="x" data-n="2">&lt;b&gt;bold&lt;/b&gt;ab</p>'
    assert got["time"] == "2026-12-02 14:05 UTC"
    assert got["seconds"] == "2026-12-02 14:05:09 UTC"
    assert got["none"] == "—"
