"""The user's Security tab (/ui/security) in a real browser against the real service:
enrollment with a TOTP computed here, the first codes, a sign-in with one of them,
regeneration (progress, wrong code, a used step, throttled, locked), the new codes
copied, downloaded and printed from the one retrieval, gone after a reload; codes
turned off by the organization; signing out. Nothing of the codes in storage, the
URL or the console. axe on every state, screenshots at 1280 and 390 px."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from tests.browser.conftest import SCREENSHOTS, Axe, PageLog, Shoot, Ui, User
from tests.support import codes
from tests.support.codes import CODE_RE

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

READY = 'html[data-state="ready"]'
TIMEOUT = 30_000  # ms: the worker makes a set well within this


def open_page(ui: Ui, page: Page, user: User) -> None:
    ui.enter(page, "user", user.user_id, user.org)
    page.wait_for_selector(READY, timeout=TIMEOUT)


def verify(ui: Ui, user: User, code: str) -> dict[str, object]:
    got = ui.call(
        "POST",
        f"/v1/users/{user.user_id}/backup-codes/verify",
        ui.service_token(user.org),
        {"code": code},
    )
    assert got.status == 200, got.body
    answer: dict[str, object] = got.json()
    return answer


def shown_codes(page: Page) -> list[str]:
    page.wait_for_selector("#new-codes:not([hidden]) #new-codes-list li", timeout=TIMEOUT)
    return [c.strip() for c in page.locator("#new-codes-list code").all_inner_texts()]


def focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement && document.activeElement.id"))


def focus_reaches(page: Page, element_id: str) -> None:
    """Wait until `element_id` has the focus: the page moves it after its own awaits
    (a refresh of the state, a render), not at once when the content appears."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.wait_for_function(
            "(id) => document.activeElement && document.activeElement.id === id",
            arg=element_id,
            timeout=TIMEOUT,
        )
    except PlaywrightError:
        raise AssertionError(f"focus on {focused_id(page)!r}, not {element_id!r}") from None


def assert_no_codes_kept(page: Page, log: PageLog, codes: list[str]) -> None:
    """Neither storage, the address, the history nor the console holds a code."""
    kept = page.evaluate(
        """() => JSON.stringify([
            Object.entries(localStorage), Object.entries(sessionStorage),
            location.href, document.cookie, history.length])"""
    )
    seen = kept + log.text()
    for code in codes:
        assert code not in seen
        assert code.replace("-", "") not in seen


def regenerate_with(page: Page, totp: str) -> None:
    page.get_by_role("button", name="Regenerate backup codes").click()
    field = page.get_by_label("6-digit code from your authenticator app")
    focus_reaches(page, "regen-totp")
    field.fill(totp)
    page.get_by_role("button", name="Verify and regenerate").click()


def totp_standing(ui: Ui, user: User, consecutive: int) -> None:
    """Give the user `consecutive` failed TOTP attempts in a row, as that many wrong
    codes over days would (the cap is 100: the next wrong code locks)."""
    with closing(sqlite3.connect(Path(ui.svc.env["MFA_VAR_DIR"]) / "mfa.db")) as db:
        (internal,) = db.execute(
            "SELECT id FROM users WHERE org_id = ? AND external_id = ?", (user.org, user.user_id)
        ).fetchone()
        db.execute(
            "INSERT INTO attempt_limits (user_id, factor, consecutive_failures, window_failures)"
            " VALUES (?, 'totp', ?, 0) ON CONFLICT (user_id, factor)"
            " DO UPDATE SET consecutive_failures = excluded.consecutive_failures",
            (internal, consecutive),
        )
        db.commit()


def wrong_totp(user: User) -> str:
    assert user.secret
    return codes.wrong_totp(user.secret)


# --- the whole flow ------------------------------------------------------------------


def test_the_whole_user_flow(
    ui: Ui,
    context: BrowserContext,
    page: Page,
    page_log: PageLog,
    shoot: Shoot,
    axe: Axe,
    tmp_path: Path,
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui.base)
    org = ui.org()
    alice = ui.user(org, enrolled=False)
    open_page(ui, page, alice)

    # Not enrolled: the offer to set up an app; no backup codes before that.
    assert page.locator("#mfa-badge").inner_text() == "Off"
    assert page.locator("#codes").is_hidden()
    shoot(page, "security-not-enrolled")
    axe(page)

    # Enrollment: QR code (an image of data: SVG), the setup key, a 6-digit code.
    page.get_by_role("button", name="Set up authenticator app").click()
    qr = page.get_by_role("img", name=re.compile("QR code"))
    qr.wait_for()
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml;base64,")
    assert page.evaluate("document.getElementById('enroll-qr').naturalWidth") > 0
    focus_reaches(page, "enroll-setup-title")
    secret = page.locator("#enroll-secret").inner_text().replace(" ", "")
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret)
    alice.secret = secret
    shoot(page, "security-enroll")
    axe(page)
    page.get_by_label("Enter the 6-digit code your app shows").fill(alice.totp())
    page.get_by_role("button", name="Verify and turn on").click()

    # The first codes: shown once, focus on their heading.
    first = shown_codes(page)
    assert len(first) == 5 and all(CODE_RE.fullmatch(c) for c in first)
    focus_reaches(page, "new-codes-title")
    assert page.locator("#mfa-badge").inner_text() == "On"
    assert "will not be shown again" in page.locator("#new-codes").inner_text()
    shoot(page, "security-first-codes")
    axe(page)
    page.get_by_role("button", name="I have saved my codes").click()
    assert page.locator("#new-codes-list li").count() == 0
    assert page.locator("#codes-remaining").inner_text() == "5 of 5 left"

    # Sign in with three of them through the API (as the sign-in page does): low.
    for code in first[:3]:
        assert verify(ui, alice, code)["accepted"] is True
    page.reload()
    page.wait_for_selector(READY)
    assert page.locator("#codes-remaining").inner_text() == "2 of 5 left"
    assert page.locator("#codes-badge").inner_text() == "Running low"
    assert "only 2 backup codes left" in page.locator("#codes-notices").inner_text()
    assert page.locator("#codes-last-used").inner_text() != "Never"
    assert page.locator("#events-body tr").count() > 0
    events = page.locator("#events-body").inner_text()
    assert "Signed in with a backup code" in events
    shoot(page, "security-running-low")
    axe(page)

    # Regeneration: the warning, the 6-digit field; progress held on screen while the
    # worker's answer to the first poll waits here (the real answer, delivered later).
    page.get_by_role("button", name="Regenerate backup codes").click()
    field = page.get_by_label("6-digit code from your authenticator app")
    assert field.get_attribute("inputmode") == "numeric"
    assert field.get_attribute("autocomplete") == "one-time-code"
    focus_reaches(page, "regen-totp")
    assert "Every earlier backup code stops working" in page.locator("#regen").inner_text()
    shoot(page, "security-regenerate")
    axe(page)
    held: list[Route] = []
    polls = re.compile(r".*/v1/me/backup-codes/regenerations/[^/]+$")
    page.route(polls, lambda route: held.append(route))
    field.fill(alice.totp(offset_steps=1))  # the enrollment used this step
    page.get_by_role("button", name="Verify and regenerate").click()
    page.wait_for_selector("#progress:not([hidden])")
    page.wait_for_function("() => document.activeElement.id === 'progress-text'")
    shoot(page, "security-progress")
    axe(page)
    for route in held:
        route.continue_()
    page.unroute(polls)

    new = shown_codes(page)
    assert len(new) == 5 and not set(new) & set(first)
    focus_reaches(page, "new-codes-title")
    assert page.locator("#new-codes-title").inner_text() == "Your new backup codes"
    shoot(page, "security-new-codes")
    axe(page)

    # Copy: the clipboard holds the codes one a line.
    page.get_by_role("button", name="Copy codes").click()
    assert page.evaluate("navigator.clipboard.readText()") == "\n".join(new) + "\n"
    # Download: the PDF of the same retrieval, named as the contract says.
    with page.expect_download() as info:
        page.get_by_role("button", name="Download PDF").click()
    download = info.value
    assert re.fullmatch(r"backup-codes-\d{4}-\d\d-\d\d\.pdf", download.suggested_filename)
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    printed = subprocess.run(
        ["pdftotext", "-layout", str(saved), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert all(code in printed for code in new)
    # Print: only the codes (the print stylesheet), nothing of the page around them.
    page.emulate_media(media="print")
    assert page.locator("#new-codes-list").is_visible()
    for other in ("#events", "#mfa", "header.topbar", "#codes-summary", "#codes-copy"):
        assert page.locator(other).is_hidden(), other
    page.screenshot(path=str(SCREENSHOTS / "security-print-1280.png"), full_page=True)
    page.emulate_media(media="screen")

    # The old codes are dead, the new ones work.
    assert verify(ui, alice, first[3])["accepted"] is False
    assert verify(ui, alice, new[0])["accepted"] is True
    assert_no_codes_kept(page, page_log, first + new)

    # A reload: the codes are gone for good.
    page.reload()
    page.wait_for_selector(READY)
    assert page.locator("#new-codes-list li").count() == 0
    assert page.locator("#new-codes").is_hidden()
    html = page.content()
    assert not [code for code in new if code in html]
    assert page.locator("#codes-remaining").inner_text() == "4 of 5 left"
    assert_no_codes_kept(page, page_log, first + new)
    page_log.assert_clean()


# --- refusals ------------------------------------------------------------------------


def test_a_wrong_code_and_a_used_step_are_explained(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    bob = ui.user(org)
    open_page(ui, page, bob)
    page.locator("#codes-summary").wait_for()

    regenerate_with(page, wrong_totp(bob))
    error = page.locator("#regen-error")
    error.wait_for(timeout=TIMEOUT)
    assert "didn\u2019t match" in error.inner_text()
    focus_reaches(page, "regen-totp")
    assert (
        page.get_by_label("6-digit code from your authenticator app").get_attribute("aria-invalid")
        == "true"
    )
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('did' + 'n\u2019t match')"
    )
    shoot(page, "security-wrong-code")
    axe(page)

    # A step already accepted once (here by a sign-in through the API), once more.
    used = bob.totp()
    signed_in = ui.call(
        "POST", f"/v1/users/{bob.user_id}/totp/verify", ui.service_token(org), {"totp": used}
    )
    assert signed_in.status == 200, signed_in.body
    page.get_by_label("6-digit code from your authenticator app").fill(used)
    page.get_by_role("button", name="Verify and regenerate").click()
    page.wait_for_function(
        "() => document.getElementById('regen-error').textContent.includes('already been used')",
        timeout=TIMEOUT,
    )
    shoot(page, "security-used-step")
    page_log.assert_clean()


def test_a_throttled_user_sees_when_to_try_again(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    carol = ui.user(org)
    service = ui.service_token(org)
    for _ in range(5):  # 5 wrong codes in 15 minutes throttle the user's TOTP
        got = ui.call(
            "POST", f"/v1/users/{carol.user_id}/totp/verify", service, {"totp": wrong_totp(carol)}
        )
        assert got.status == 200 and got.json()["accepted"] is False, got.body
    open_page(ui, page, carol)
    page.get_by_role("button", name="Regenerate backup codes").click()
    error = page.locator("#regen-error")
    assert re.search(
        r"try again at \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in about 1[45] minutes\)", error.inner_text()
    )
    assert page.get_by_label("6-digit code from your authenticator app").is_disabled()
    assert page.get_by_role("button", name="Verify and regenerate").is_disabled()
    focus_reaches(page, "regen-error")
    shoot(page, "security-throttled")
    axe(page)
    page_log.assert_clean()


def test_a_locked_user_is_told_only_an_administrator_unlocks(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    dave = ui.user(org)
    totp_standing(ui, dave, consecutive=99)
    open_page(ui, page, dave)
    regenerate_with(page, wrong_totp(dave))  # the hundredth wrong code in a row
    error = page.locator("#regen-error")
    page.wait_for_function(
        "() => document.getElementById('regen-error').textContent.includes('locked')",
        timeout=TIMEOUT,
    )
    assert "administrator" in error.inner_text()
    assert page.get_by_label("6-digit code from your authenticator app").is_disabled()
    status = ui.call("GET", "/v1/me/mfa", ui.user_token(dave)).json()
    assert status["limits"]["totp_locked"] is True
    shoot(page, "security-locked")
    axe(page)
    # Reloaded, the page says so before anyone types.
    page.reload()
    page.wait_for_selector(READY)
    page.get_by_role("button", name="Regenerate backup codes").click()
    assert "locked" in page.locator("#regen-error").inner_text()
    page_log.assert_clean()


# --- codes off, the session's end ------------------------------------------------------


def test_codes_turned_off_leave_no_backup_code_section(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org(backup_codes_enabled=False)
    erin = ui.user(org)
    assert erin.first_regeneration is None
    open_page(ui, page, erin)
    assert page.locator("#mfa-badge").inner_text() == "On"
    assert page.locator("#codes").count() == 0
    assert "backup code" not in page.locator("main").inner_text().lower()
    shoot(page, "security-codes-disabled")
    axe(page)
    page_log.assert_clean()


def test_signing_out_ends_the_session_and_drops_the_codes(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()
    fay = ui.user(org)
    open_page(ui, page, fay)
    regenerate_with(page, fay.totp(offset_steps=1))
    shown = shown_codes(page)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector('html[data-session="signed-out"]')
    assert page.locator("#new-codes-list").count() == 0
    assert not [c for c in shown if c in page.content()]
    assert page.evaluate("(async () => (await fetch('/v1/me/mfa')).status)()") == 401
    shoot(page, "security-signed-out")
    axe(page)
    # The cookie is gone with the session: the page itself now answers 401.
    page.reload()
    assert "from the link in your application" in page.locator("body").inner_text()
    assert_no_codes_kept(page, page_log, shown)


def test_leaving_the_page_drops_the_codes_from_the_dom(ui: Ui, page: Page) -> None:
    org = ui.org()
    gus = ui.user(org)
    open_page(ui, page, gus)
    regenerate_with(page, gus.totp(offset_steps=1))
    assert len(shown_codes(page)) == 5
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}))")
    assert page.locator("#new-codes-list li").count() == 0
    assert page.locator("#new-codes").is_hidden()
