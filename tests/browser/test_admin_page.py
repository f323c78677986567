"""The administrator's console /ui/admin in a real Chromium against the real service:
the policy changed after a confirmation, a user looked up and acted on, the tokens
listed and revoked (a revoked browser session then fails in the user's own page),
webhooks against a real receiver on 127.0.0.1 (secret shown once, rotation, ping,
deliveries, retry, deletion), CSRF refused, the role check, axe and the screenshots.
API text is attacker-influenced: a payload in a user id, a support contact or a
webhook description must show as text and never run."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, Page, expect
from standardwebhooks.webhooks import Webhook

from tests.browser.conftest import REPO, Axe, PageLog, Shoot, Ui, new_page
from tests.support.receiver import Reply, receiver

ADMIN = "ops-root"
XSS = "<img src=x onerror=alert(1)>"


def open_console(ui: Ui, page: Page, org: str, *, from_cli: bool = False) -> list[str]:
    """The admin's ui-link opened in `page` (`from_cli`: printed by `mfa-codes ui-link`
    itself), the console loaded; returns the list of dialogs the page opens from now on
    (an executed payload would open one)."""
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    if from_cli:
        url = ui.cli("ui-link", org, ADMIN, "--role", "admin").strip().splitlines()[-1]
        page.goto(url)
        page.wait_for_url(ui.base + "/ui/admin", wait_until="load")
    else:
        ui.enter(page, "admin", ADMIN, org)
    expect(page.locator("html")).to_have_attribute("data-state", "ready")
    expect(page.get_by_role("heading", level=1)).to_have_text("Administration")
    expect(page.locator("#account")).to_contain_text(ADMIN)
    return dialogs


def assert_clean(log: PageLog) -> None:
    """No uncaught error, CSP violation or console error, except chromium's own line
    for an API answer the test provoked on purpose (a 4xx shown in the page)."""
    assert log.errors == [], log.errors
    assert log.csp_violations == [], log.csp_violations
    refusal = "Failed to load resource: the server responded with a status of 4"
    assert [t for t in log.console_errors if not t.startswith(refusal)] == []


def no_injected_markup(page: Page) -> None:
    assert page.locator("main img").count() == 0, "API text was parsed as HTML"


def api_json(ui: Ui, method: str, path: str, token: str, body: object = None) -> Any:
    got = ui.call(method, path, token, body)
    assert 200 <= got.status < 300, (got.status, got.body)
    return got.json() if got.body else None


def in_page_fetch(page: Page, method: str, path: str, body: object, csrf: bool) -> Any:
    """A fetch from the page's own context, with or without the session's CSRF header."""
    return page.evaluate(
        """async ([method, path, body, csrf]) => {
          const headers = {"Content-Type": "application/json", Accept: "application/json"};
          if (csrf) {
            const s = await (await fetch("/ui/session", {credentials: "same-origin"})).json();
            headers["X-CSRF-Token"] = s.csrf_token;
          }
          const r = await fetch(path, {method, headers, credentials: "same-origin",
                                       body: JSON.stringify(body)});
          return {status: r.status, body: await r.json()};
        }""",
        [method, path, body, csrf],
    )


# --- policy -----------------------------------------------------------------------------


def test_an_admin_link_opens_the_console_and_the_policy_changes_only_once_confirmed(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    dialogs = open_console(ui, page, org, from_cli=True)
    expect(page.get_by_label("Codes in each new set")).to_have_value("5")
    expect(page.get_by_label("Backup codes are turned on")).to_be_checked()

    # Out of range: said beside the field, nothing sent.
    page.get_by_label("Codes in each new set").fill("21")
    page.get_by_role("button", name="Review changes").click()
    expect(page.locator("#policy-count-error")).to_contain_text("1 to 20")
    expect(page.get_by_label("Codes in each new set")).to_be_focused()
    expect(page.get_by_label("Codes in each new set")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Codes in each new set").fill("8")
    page.get_by_label("Tell users by mail").uncheck()
    page.get_by_label("Support contact").fill(XSS)
    page.get_by_role("button", name="Review changes").click()
    confirm = page.locator("#policy-confirm")
    expect(confirm).to_be_focused()
    for said in ("Codes in each new set", "5", "8", "Mail to users", XSS):
        expect(page.locator("#policy-changes")).to_contain_text(said)
    expect(page.locator("#policy-changes li")).to_have_count(3)
    # Nothing changed before the confirmation.
    admin = ui.admin_token(org)
    assert api_json(ui, "GET", "/v1/org/policy", admin)["code_count"] == 5
    shoot(page, "admin-policy-confirm")

    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#policy-done")).to_be_focused()
    expect(page.locator("#policy-done")).to_contain_text("Policy saved")
    expect(page.locator("#status")).to_contain_text("Policy saved")
    assert api_json(ui, "GET", "/v1/org/policy", admin) == {
        "backup_codes_enabled": True,
        "code_count": 8,
        "notify_users": False,
        "support_contact": XSS,
    }

    page.reload()
    expect(page.locator("html")).to_have_attribute("data-state", "ready")
    expect(page.get_by_label("Support contact")).to_have_value(XSS)
    expect(page.get_by_label("Tell users by mail")).not_to_be_checked()
    no_injected_markup(page)
    assert dialogs == []
    axe(page)
    page_log.assert_clean()


# --- a user -----------------------------------------------------------------------------


def test_a_user_looked_up_then_codes_revoked_unlocked_and_mfa_reset(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    alice = ui.user(org, enrolled=True)
    own = ui.user_token(alice)
    assert alice.first_regeneration is not None
    ui.svc.await_finished(own, alice.first_regeneration["id"])
    dialogs = open_console(ui, page, org)
    lookup = page.get_by_label("User id")

    # A payload as a user id: no such user, said as text.
    lookup.fill(XSS)
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#user-id-error")).to_contain_text(f"No user with the id “{XSS}”")
    expect(lookup).to_be_focused()
    no_injected_markup(page)

    lookup.fill(alice.user_id)
    page.get_by_role("button", name="Look up").click()
    result = page.locator("#user-result")
    expect(result).to_be_focused()
    expect(result).to_contain_text(alice.user_id)
    expect(page.locator("#user-facts")).to_contain_text("5 of 5 left")
    expect(page.locator("#user-facts")).to_contain_text("Yes")
    expect(page.locator("#user-facts")).to_contain_text("None")  # no lock

    # Revoke asks first; Cancel changes nothing and gives the focus back.
    revoke = page.get_by_role("button", name="Revoke backup codes")
    revoke.click()
    expect(page.locator("#user-confirm")).to_be_focused()
    page.locator("#user-confirm").get_by_role("button", name="Cancel").click()
    expect(page.locator("#user-confirm")).to_be_hidden()
    expect(revoke).to_be_focused()
    user_path = f"/v1/users/{alice.user_id}"
    admin = ui.admin_token(org)
    assert api_json(ui, "GET", user_path, admin)["mfa"]["backup_codes"]["remaining"] == 5

    revoke.click()
    page.get_by_role("button", name="Revoke codes").click()
    expect(page.locator("#user-done")).to_contain_text(f"Backup codes of {alice.user_id} revoked")
    expect(page.locator("#user-done")).to_be_focused()
    assert api_json(ui, "GET", user_path, admin)["mfa"]["backup_codes"] is None
    expect(revoke).to_be_disabled()  # nothing left to revoke

    page.get_by_role("button", name="Unlock").click()
    expect(page.locator("#user-done")).to_contain_text("unlocked")

    page.get_by_role("button", name="Reset MFA").click()
    expect(page.locator("#user-confirm")).to_contain_text("must enroll again")
    shoot(page, "admin-user-reset-confirm")
    page.locator("#user-confirm").get_by_role("button", name="Reset MFA").click()
    expect(page.locator("#user-done")).to_contain_text("MFA of")
    mfa = api_json(ui, "GET", user_path, admin)["mfa"]
    assert mfa["enrolled"] is False
    # The reset revoked the user's tokens too.
    assert ui.call("GET", "/v1/me/mfa", own).status == 401
    expect(page.locator("#user-facts")).to_contain_text("No")
    assert dialogs == []
    axe(page)
    assert_clean(page_log)


# --- tokens -----------------------------------------------------------------------------


def test_the_admin_revokes_a_users_browser_session_and_the_users_open_page_then_fails(
    ui: Ui, browser: Browser, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    bob = ui.user(org, enrolled=False)
    bob_token = ui.user_token(bob)  # an API token of bob's, which must keep working
    user_log = PageLog()
    user_page = new_page(browser, ui, user_log)
    # Until the security page's branch is merged its HTML may be missing here; the
    # page's shared modules (lib/api.js, lib/session.js) are what this test is about.
    security_page = (REPO / "api" / "ui" / "html" / "security.html").exists()
    try:
        ui.enter(user_page, "user", bob.user_id, org)
        if security_page:
            expect(user_page.locator("html")).to_have_attribute("data-state", "ready")

        open_console(ui, page, org)
        page.get_by_label("Principal id").fill(bob.user_id)
        page.get_by_role("button", name="Show tokens").click()
        rows = page.locator("#token-rows tr")
        expect(rows).to_have_count(2)
        session_row = page.locator('#token-rows tr[data-kind="session"]')
        expect(session_row).to_contain_text("Browser session")
        expect(session_row).to_contain_text("Active")
        shoot(page, "admin-tokens")

        session_row.get_by_role("button", name="Revoke").click()
        confirm = page.locator("#token-confirm")
        expect(confirm).to_be_focused()
        expect(confirm).to_contain_text(f"browser session of {bob.user_id}")
        confirm.get_by_role("button", name="Revoke").click()
        expect(confirm).to_be_hidden()
        expect(session_row).to_contain_text("Revoked")
        expect(page.locator("#status")).to_contain_text("revoked")
        expect(page.locator('#token-rows tr[data-kind="token"]')).to_contain_text("Active")

        # The user's page: its next API call is refused, and it says the session ended.
        status = user_page.evaluate(
            """() => import("/ui/static/lib/api.js")
                 .then((m) => m.api("GET", "/v1/me/mfa"))
                 .then(() => 200, (e) => e.status)"""
        )
        assert status == 401
        expect(user_page.get_by_text("Your session has ended")).to_be_visible()
        expect(user_page.locator("html")).to_have_attribute("data-session", "ended")
        # Reloaded, the page itself is refused too.
        reloaded = user_page.reload()
        assert reloaded is not None and reloaded.status == (401 if security_page else 404)
        # Only the session went: bob's API token still answers.
        assert ui.call("GET", "/v1/me/mfa", bob_token).status == 200
    finally:
        user_page.context.close()
    axe(page)
    page_log.assert_clean()


def test_tokens_filter_and_page(ui: Ui, page: Page, page_log: PageLog) -> None:
    org = ui.org()
    carol = ui.user(org, enrolled=False)
    made = [ui.user_token(carol) for _ in range(27)]
    listed = api_json(
        ui, "GET", f"/v1/org/tokens?principal_id={carol.user_id}", ui.admin_token(org)
    )
    newest = listed["tokens"][0]["token_id"]
    assert len(made) == 27 and len(listed["tokens"]) == 27
    open_console(ui, page, org)

    page.get_by_label("Principal id").fill(carol.user_id)
    page.get_by_role("button", name="Show tokens").click()
    rows = page.locator("#token-rows tr")
    expect(rows).to_have_count(25)
    expect(rows.first).to_have_attribute("data-token-id", newest)  # newest first
    page.get_by_role("button", name="Next page").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#token-caption")).to_be_focused()
    expect(page.get_by_role("button", name="Next page")).to_be_hidden()
    page.get_by_role("button", name="First page").click()
    expect(rows).to_have_count(25)

    # Role filter: the admins' tokens are this browser session and the test's own.
    page.get_by_label("Principal id").fill("")
    page.get_by_label("Role").select_option("admin")
    page.get_by_role("button", name="Show tokens").click()
    expect(rows).to_have_count(2)
    expect(page.locator('#token-rows tr[data-kind="session"]')).to_contain_text(ADMIN)
    expect(page.locator('#token-rows tr[data-kind="token"]')).to_contain_text("ops-admin")

    # A bad filter is said beside the field it names.
    page.get_by_label("Role").select_option("")
    page.evaluate("document.getElementById('token-principal').removeAttribute('maxlength')")
    page.get_by_label("Principal id").fill("x" * 129)
    page.get_by_role("button", name="Show tokens").click()
    expect(page.locator("#token-principal-error")).to_contain_text("principal_id")
    expect(page.get_by_label("Principal id")).to_have_attribute("aria-invalid", "true")
    assert_clean(page_log)


# --- webhooks ---------------------------------------------------------------------------


def delivery_row(page: Page, status: str) -> Any:
    return page.locator(f'tr[data-status="{status}"]')


def test_webhooks_secret_once_rotate_ping_deliveries_retry_delete(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    dialogs = open_console(ui, page, org)
    expect(page.locator("#webhook-empty")).to_be_visible()

    with receiver(Reply(200)) as rx:
        page.get_by_text("Add a webhook").click()
        # Refused by the API: said beside the URL field.
        page.get_by_label("Receiver URL").fill("ftp://127.0.0.1/x")
        page.get_by_role("button", name="Add webhook").click()
        url_field = page.get_by_label("Receiver URL")
        expect(page.locator("#webhook-url-error")).to_contain_text("https")
        expect(url_field).to_have_attribute("aria-invalid", "true")
        expect(url_field).to_be_focused()

        url_field.fill(rx.url)
        page.get_by_label("Description").fill(XSS)
        # Only what the test sends: no checkpoint or other event reaches the receiver.
        page.get_by_label("All events").uncheck()
        page.get_by_label("webhook.ping").check()
        page.get_by_label("mfa.reset").check()
        page.get_by_role("button", name="Add webhook").click()
        panel = page.locator("#webhook-secret")
        expect(panel).to_be_focused()
        expect(panel).to_contain_text("You won't see it again")
        secret = page.locator("#webhook-secret-value").input_value()
        assert secret.startswith("whsec_")
        shoot(page, "admin-webhook-secret")
        page.get_by_role("button", name="Copy").click()
        expect(page.locator("#webhook-secret-copied")).to_contain_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        page.get_by_role("button", name="I have stored it").click()
        expect(panel).to_be_hidden()
        card = page.locator("#webhook-list li")
        expect(card.locator("h4")).to_be_focused()
        assert secret not in page.content()
        expect(card).to_contain_text(XSS)  # the description, as text
        no_injected_markup(page)

        page.reload()
        expect(page.locator("html")).to_have_attribute("data-state", "ready")
        assert secret not in page.content()
        expect(page.locator("#webhook-secret")).to_be_hidden()
        card = page.locator("#webhook-list li")
        expect(card).to_have_count(1)
        expect(card).to_contain_text(rx.url)
        expect(card).to_contain_text("mfa.reset, webhook.ping")

        # Rotation: asked first, the new secret shown once.
        card.get_by_role("button", name="Rotate secret").click()
        card.locator(".admin-confirm").get_by_role("button", name="Rotate secret").click()
        expect(panel).to_be_focused()
        rotated = page.locator("#webhook-secret-value").input_value()
        assert rotated.startswith("whsec_") and rotated != secret
        page.get_by_role("button", name="I have stored it").click()

        # Ping: the receiver gets it, signed with the new secret; the list shows it.
        card.get_by_role("button", name="Send a ping").click()
        expect(delivery_row(page, "succeeded")).to_have_count(1, timeout=30_000)
        expect(delivery_row(page, "succeeded")).to_contain_text("webhook.ping")
        expect(delivery_row(page, "succeeded")).to_contain_text("HTTP 200")
        (got,) = rx.requests()
        payload = Webhook(rotated).verify(got.body, got.headers)
        assert payload["type"] == "webhook.ping"

        # A 410 kills the next ping and disables the webhook; turned on again, the dead
        # delivery is retried from the page and succeeds.
        rx.script(Reply(410), Reply(200))
        card.get_by_role("button", name="Send a ping").click()
        expect(delivery_row(page, "dead")).to_have_count(1, timeout=30_000)
        expect(card).to_contain_text("Disabled")
        expect(delivery_row(page, "dead")).to_contain_text("HTTP 410")
        shoot(page, "admin-webhooks")
        axe(page)
        card.get_by_role("button", name="Turn on").click()
        expect(card).to_contain_text("Enabled")
        delivery_row(page, "dead").get_by_role("button", name="Retry").click()
        expect(delivery_row(page, "succeeded")).to_have_count(2, timeout=30_000)
        expect(delivery_row(page, "dead")).to_have_count(0)
        assert len(rx.requests()) == 3

    # The state filter of the deliveries: nothing is dead any more.
    card.get_by_label("State").select_option("dead")
    expect(card.locator(".admin-deliveries-box .admin-empty")).to_be_visible()
    expect(card.locator("tr[data-status]")).to_have_count(0)

    card.get_by_role("button", name="Delete").click()
    card.locator(".admin-confirm").get_by_role("button", name="Delete webhook").click()
    expect(page.locator("#webhook-empty")).to_be_visible()
    expect(page.locator("#webhooks-title")).to_be_focused()
    assert api_json(ui, "GET", "/v1/org/webhooks", ui.admin_token(org)) == {"webhooks": []}
    assert dialogs == []
    assert secret not in page_log.text() and rotated not in page_log.text()
    assert_clean(page_log)


# --- CSRF, role, the whole page ----------------------------------------------------------


def test_a_state_change_without_the_csrf_header_is_refused(ui: Ui, page: Page) -> None:
    org = ui.org()
    open_console(ui, page, org)
    policy = {"backup_codes_enabled": False, "code_count": 3}
    refused = in_page_fetch(page, "PUT", "/v1/org/policy", policy, csrf=False)
    assert refused["status"] == 403, refused
    assert refused["body"]["type"].endswith("/csrf-failed"), refused
    assert api_json(ui, "GET", "/v1/org/policy", ui.admin_token(org))["code_count"] == 5
    # The same call with the page's header passes: it was the header, nothing else.
    allowed = in_page_fetch(page, "PUT", "/v1/org/policy", policy, csrf=True)
    assert allowed["status"] == 200, allowed
    assert allowed["body"]["code_count"] == 3


def test_a_users_session_gets_403_on_the_console(ui: Ui, page: Page) -> None:
    org = ui.org()
    dave = ui.user(org, enrolled=False)
    ui.enter(page, "user", dave.user_id, org)
    answer = page.goto(ui.base + "/ui/admin")
    assert answer is not None and answer.status == 403
    expect(page.locator("body")).to_contain_text("administrator")
    assert page.locator("#policy-form").count() == 0


def test_the_whole_console_at_both_widths(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    erin = ui.user(org, enrolled=True)
    own = ui.user_token(erin)
    assert erin.first_regeneration is not None
    ui.svc.await_finished(own, erin.first_regeneration["id"])
    admin = ui.admin_token(org)
    ui.policy(org, support_contact="security@example.com")
    api_json(
        ui,
        "POST",
        "/v1/org/webhooks",
        admin,
        {
            "url": "https://hooks.example.com/mfa",
            "events": ["backup_codes.*", "mfa.reset"],
            "description": "SIEM",
        },
    )
    open_console(ui, page, org)
    page.get_by_label("User id").fill(erin.user_id)
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#user-facts")).to_contain_text("5 of 5 left")
    shoot(page, "admin")
    axe(page)
    page.emulate_media(media="print")
    shoot(page, "admin-print")
    page.emulate_media(media="screen")
    # Nothing from another origin, and no icon request (it is declared inline).
    assert all(url.startswith((ui.base + "/", "data:")) for url in page_log.requests), (
        page_log.requests
    )
    assert not any(url.endswith("/favicon.ico") for url in page_log.requests)
    page_log.assert_clean()
