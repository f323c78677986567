"""/ui/audit in a real browser: the security team's trail.

An auditor's ui-link (the CLI) opens the page; the events a module-wide organization
made through the API, in three phases a second apart, are filtered by user, by type
prefix and by time range, paged, opened onto their details and hashes, and exported
as CSV and NDJSON; the chain's verdict is shown, then a row is tampered with in the
service's database and the first bad seq is named. Each expectation is computed here
from a full NDJSON dump (bearer auditor token), not from the service's own filters.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import re
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import SCREENSHOTS, Axe, PageLog, Shoot, Ui

if TYPE_CHECKING:
    from playwright.sync_api import Page

XSS = "<img src=x onerror=alert(1)>"
READY = 'html[data-state="ready"]'
CARO_TOKENS = 60  # phase 3: more than a page of 50 in all, three pages of 25 of token.*
SQLITE_NO_UPDATE = next(
    s
    for s in importlib.import_module("migrations.versions.0002_audit_append_only").SQLITE_UP
    if "audit_events_no_update" in s
)


# --- the trail ------------------------------------------------------------------------


def send(
    ui: Ui,
    method: str,
    path: str,
    token: str,
    request_id: str,
    body: object = None,
    user_agent: str = "audit-page-test",
) -> Any:
    """One API call with our own X-Request-Id and User-Agent (recorded in its events)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(ui.base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("X-Request-Id", request_id)
    req.add_header("User-Agent", user_agent)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"null")


def next_second() -> None:
    """Wait (bounded) until the clock is in a later whole second than now."""
    now = int(time.time())
    deadline = time.monotonic() + 2
    while int(time.time()) <= now:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def utc_input(seconds: int) -> str:
    """A whole second as a datetime-local value, read by the page as UTC."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def second_of(event: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(event["occurred_at"]).timestamp())


@dataclass
class Trail:
    org: str
    auditor: str  # a bearer auditor token, for the dumps the tests compare with
    window: tuple[int, int]  # phase 2's first and last whole second

    def dump(self, ui: Ui) -> list[dict[str, Any]]:
        got = ui.call("GET", "/v1/audit/events", self.auditor, accept="application/x-ndjson")
        assert got.status == 200, got.body
        return [json.loads(line) for line in got.body.decode().splitlines()]


@pytest.fixture(scope="module")
def trail(ui: Ui) -> Trail:
    org = ui.org()
    service = ui.service_token(org)
    auditor = ui.token(org, "sec-api", "auditor")
    # Phase 1: three users.
    for name in ("alice", "bob", "carol"):
        status, _ = send(ui, "PUT", f"/v1/users/{name}", service, f"p1-{name}", {})
        assert status == 201
    next_second()
    start = int(time.time())
    # Phase 2: tokens for alice and bob, a user made by a hostile user agent, an enrollment.
    status, alice = send(ui, "POST", "/v1/users/alice/tokens", service, "p2-alice-token", {})
    assert status == 201
    status, _ = send(ui, "POST", "/v1/users/bob/tokens", service, "p2-bob-token", {})
    assert status == 201
    status, _ = send(ui, "PUT", "/v1/users/mallory", service, "p2-mallory", {}, user_agent=XSS)
    assert status == 201
    status, _ = send(ui, "POST", "/v1/me/mfa/enrollment", alice["token"], "p2-alice-enroll")
    assert status == 201
    end = int(time.time())
    next_second()
    # Phase 3: many tokens for carol.
    for n in range(CARO_TOKENS):
        status, _ = send(ui, "POST", "/v1/users/carol/tokens", service, f"p3-carol-{n}", {})
        assert status == 201
    return Trail(org, auditor, (start, end))


def open_audit(ui: Ui, page: Page, org: str, query: str = "") -> None:
    ui.enter(page, "auditor", "security-team", org)
    if query:
        page.goto(f"{ui.base}/ui/audit{query}")
    page.wait_for_selector(READY)


def shown_seqs(page: Page) -> list[int]:
    return [
        int(s)
        for s in page.locator("#events tbody.audit-event").evaluate_all(
            "bodies => bodies.map(b => b.dataset.seq)"
        )
    ]


def apply(page: Page, **fields: str) -> None:
    """Fill the filter form (user, type, from, to, request, limit) and apply it."""
    names = {
        "user": "#f-user",
        "type": "#f-type",
        "from": "#f-from",
        "to": "#f-to",
        "request": "#f-request",
    }
    for key, value in fields.items():
        if key == "limit":
            page.select_option("#f-limit", value)
        else:
            page.fill(names[key], value)
    with page.expect_response(lambda r: "/v1/audit/events?" in r.url):
        page.get_by_role("button", name="Apply filters").click()
    page.wait_for_function(
        "() => document.querySelector('#events').getAttribute('aria-busy') === 'false'"
    )


def seqs(events: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[int]:
    return [e["seq"] for e in events if keep(e)]


# --- opening the page -------------------------------------------------------------------


def test_an_auditor_link_opens_the_trail_with_the_chain_intact(
    ui: Ui, trail: Trail, page: Page, page_log: PageLog
) -> None:
    # This once from the command itself, as the security team gets it.
    printed = ui.cli("ui-link", trail.org, "security-team", "--role", "auditor")
    page.goto(printed.strip().splitlines()[-1])
    page.wait_for_url(f"{ui.base}/ui/audit")
    page.wait_for_selector(READY)
    assert page.url == f"{ui.base}/ui/audit"  # the ticket is gone from the address
    verdict = page.locator("#chain-verdict")
    assert verdict.inner_text().startswith("Chain intact")
    assert page.locator("#chain").get_attribute("data-verdict") == "ok"
    head = ui.call("GET", "/v1/audit/verification", trail.auditor).json()["head"]
    assert int(page.locator("#chain-head-seq").inner_text().split()[-1]) <= head["seq"]
    # Oldest first, one page of 50, every row the org's.
    shown = shown_seqs(page)
    assert shown == sorted(shown) and len(shown) == 50 and shown[0] == 1
    assert page.locator("#position").inner_text().startswith("Page 1: 50 events, seq 1 to ")
    assert not page.locator("#page-next").is_disabled()
    page_log.assert_clean()


# --- filters ---------------------------------------------------------------------------


def test_filtering_by_user_shows_exactly_that_users_events_and_survives_a_reload(
    ui: Ui, trail: Trail, page: Page, page_log: PageLog
) -> None:
    open_audit(ui, page, trail.org)
    apply(page, user="alice")
    expected = seqs(trail.dump(ui), lambda e: e["user_id"] == "alice")
    assert len(expected) >= 3  # created, its token, its enrollment
    assert shown_seqs(page) == expected
    assert page.evaluate("document.activeElement.id") == "position"
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('alice')")
    assert page.url.endswith("/ui/audit?user=alice")
    page.reload()
    page.wait_for_selector(READY)
    assert page.input_value("#f-user") == "alice"
    assert shown_seqs(page) == expected
    page_log.assert_clean()


def test_filtering_by_a_type_prefix_shows_exactly_those_types(
    ui: Ui, trail: Trail, page: Page
) -> None:
    open_audit(ui, page, trail.org)
    apply(page, type="token.*", limit="250")
    expected = seqs(trail.dump(ui), lambda e: e["type"].startswith("token."))
    assert len(expected) >= CARO_TOKENS + 2
    assert shown_seqs(page) == expected
    types = page.locator("#events .audit-type").all_inner_texts()
    assert types and all(t.startswith("token.") for t in types)


def test_filtering_by_a_time_range_shows_exactly_the_events_of_those_seconds(
    ui: Ui, trail: Trail, page: Page
) -> None:
    start, end = trail.window
    open_audit(ui, page, trail.org)
    apply(page, **{"from": utc_input(start), "to": utc_input(end)})
    events = trail.dump(ui)
    expected = seqs(events, lambda e: start <= second_of(e) <= end)
    phase = {e["seq"]: (e["request_id"] or "")[:3] for e in events}
    assert {phase[s] for s in expected} - {""} == {"p2-"}  # no phase 1 or 3 event
    assert len([s for s in expected if phase[s] == "p2-"]) == len(
        [e for e in events if (e["request_id"] or "").startswith("p2-")]
    )
    assert shown_seqs(page) == expected


def test_a_whole_minute_in_the_time_fields_is_its_first_second_not_the_minute(
    ui: Ui, trail: Trail, page: Page
) -> None:
    # The fields show seconds (step 1), and the browser drops ":00" from their value:
    # "to 04:20:00" as the field shows it must end at 04:20:00.999, not at 04:20:59.999
    # (a time-range filter whose seconds happened to be :00 showed the whole minute).
    open_audit(ui, page, trail.org)
    page.fill("#f-from", "2026-12-04T04:20:00")
    page.fill("#f-to", "2026-12-04T04:20:00")
    assert page.input_value("#f-to") == "2026-12-04T04:20"  # what the page reads
    with page.expect_request(lambda r: "/v1/audit/events?" in r.url) as sent:
        page.get_by_role("button", name="Apply filters").click()
    query = parse_qs(urlsplit(sent.value.url).query)
    assert query["since"] == ["2026-12-04T04:20:00.000Z"]
    assert query["until"] == ["2026-12-04T04:20:00.999Z"]


def test_a_filter_nothing_matches_shows_the_empty_state(ui: Ui, trail: Trail, page: Page) -> None:
    open_audit(ui, page, trail.org)
    apply(page, user="nobody-at-all")
    assert page.locator("#events-empty").is_visible()
    assert not page.locator("#events-scroll").is_visible()
    assert page.locator("#position").inner_text() == "No events."


def test_a_malformed_filter_in_the_address_is_named_at_its_field(
    ui: Ui, trail: Trail, page: Page
) -> None:
    open_audit(ui, page, trail.org, "?type=Not%20A%20Type")
    error = page.locator("#f-type-error")
    error.wait_for()
    assert "type" in error.inner_text()
    assert page.get_attribute("#f-type", "aria-invalid") == "true"
    # Corrected in the form, checked before asking the API.
    page.fill("#f-type", "token.issued BAD")
    page.get_by_role("button", name="Apply filters").click()
    assert '"BAD" is not an event type' in page.locator("#f-type-error").inner_text()
    assert page.evaluate("document.activeElement.id") == "f-type"


# --- paging, details, hashes -------------------------------------------------------------


def test_paging_moves_by_the_cursor_and_says_where_it_is(ui: Ui, trail: Trail, page: Page) -> None:
    open_audit(ui, page, trail.org)
    apply(page, type="token.*", limit="25")
    expected = seqs(trail.dump(ui), lambda e: e["type"].startswith("token."))
    assert shown_seqs(page) == expected[:25]
    with page.expect_response(lambda r: "cursor=" in r.url):
        page.click("#page-next")
    page.wait_for_function("() => document.querySelector('#page-label').textContent === 'Page 2'")
    second = shown_seqs(page)
    assert second == expected[25:50]
    position = page.locator("#position").inner_text()
    assert position.startswith(f"Page 2: {len(second)} events, seq {second[0]} to {second[-1]}")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('Page 2')"
    )
    # Focus stays on the pager (or the position line where that button is spent).
    assert page.evaluate("document.activeElement.id") in ("page-next", "position")
    page.click("#page-prev")
    page.wait_for_function("() => document.querySelector('#page-label').textContent === 'Page 1'")
    assert shown_seqs(page) == expected[:25]
    assert page.locator("#page-prev").is_disabled()


def test_an_events_details_and_hashes_open_as_text_even_when_hostile(
    ui: Ui, trail: Trail, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_audit(ui, page, trail.org)
    apply(page, request="p2-mallory")
    event = next(e for e in trail.dump(ui) if e["request_id"] == "p2-mallory")
    assert event["user_agent"] == XSS
    assert shown_seqs(page) == [event["seq"]]
    toggle = page.get_by_role("button", name=f"Details of event {event['seq']}")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    panel = page.locator(f"#event-{event['seq']}-details")
    panel.wait_for()
    # The user agent is shown as the text it is, in the row and in the details.
    assert page.locator("#events .audit-agent").inner_text() == XSS
    assert panel.get_by_text(XSS, exact=True).is_visible()
    assert page.locator("#main img").count() == 0 and dialogs == []
    details = json.loads(panel.locator(".audit-json").inner_text())
    assert details == event["details"]
    hashes = panel.locator(".audit-hash").all_inner_texts()
    assert hashes == [event["prev_hash"], event["hash"]]
    face = panel.locator(".audit-hash").first.evaluate("n => getComputedStyle(n).fontFamily")
    assert "Mono" in face or "monospace" in face
    shoot(page, "audit")
    axe(page)
    page_log.assert_clean()


# --- export ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_export_downloads_the_filtered_selection(
    ui: Ui, trail: Trail, page: Page, fmt: str, tmp_path: Path
) -> None:
    open_audit(ui, page, trail.org)
    apply(page, user="carol", type="token.*")
    expected = seqs(
        trail.dump(ui), lambda e: e["user_id"] == "carol" and e["type"].startswith("token.")
    )
    assert len(expected) == CARO_TOKENS
    with page.expect_download() as info:
        page.click(f"#export-{fmt}")
    download = info.value
    assert re.fullmatch(
        rf"audit-{re.escape(trail.org)}-\d{{8}}T\d{{6}}Z\.{fmt}", download.suggested_filename
    ), download.suggested_filename
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    text = saved.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        got = [int(r["seq"]) for r in rows]
    else:
        rows = [json.loads(line) for line in text.splitlines()]
        got = [r["seq"] for r in rows]
    assert got == expected
    assert {r["user_id"] for r in rows} == {"carol"}


# --- the chain broken ------------------------------------------------------------------


def service_db(ui: Ui) -> Path:
    return Path(ui.svc.env["MFA_VAR_DIR"]) / "mfa.db"


def tamper_outcome(ui: Ui, org: str, seq: int) -> None:
    """Edit one event as an attacker with the database file would: the append-only
    trigger dropped for the transaction, the row changed, the trigger put back."""
    with closing(sqlite3.connect(service_db(ui), isolation_level=None, timeout=10)) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DROP TRIGGER audit_events_no_update")
        changed = db.execute(
            "UPDATE audit_events SET outcome = 'failure' WHERE org_id = ? AND seq = ?",
            (org, seq),
        ).rowcount
        db.execute(SQLITE_NO_UPDATE)
        db.execute("COMMIT")
    assert changed == 1


def last_checkpoint_seq(ui: Ui, org: str) -> int:
    with closing(sqlite3.connect(service_db(ui), timeout=10)) as db:
        row = db.execute("SELECT max(seq) FROM audit_checkpoints WHERE org_id = ?", (org,))
        seq: int = row.fetchone()[0]
    return seq


def test_a_tampered_row_is_named_as_the_first_bad_seq(
    ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe
) -> None:
    org = ui.org()  # its own: the module's trail stays intact
    for name in ("dora", "erin", "finn"):
        ui.user(org, name, enrolled=False)
    ui.cli("audit", "checkpoint")
    signed = last_checkpoint_seq(ui, org)
    open_audit(ui, page, org)
    assert page.locator("#chain").get_attribute("data-verdict") == "ok"
    assert page.locator("#chain-checkpoint").inner_text().startswith(f"seq {signed}, signed ")
    tamper_outcome(ui, org, 3)
    page.get_by_role("button", name="Verify again").click()
    page.wait_for_function("() => document.querySelector('#chain').dataset.verdict === 'broken'")
    assert page.locator("#chain-verdict").inner_text() == (
        "Chain broken: the first bad event is seq 3."
    )
    assert "Event 3" in page.locator("#chain-reason").inner_text()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('seq 3')")
    assert page.evaluate("document.activeElement.id") == "chain-recheck"
    # A reload says the same from the start; the tampered row itself is still listed.
    page.reload()
    page.wait_for_selector(READY)
    assert page.locator("#chain").get_attribute("data-verdict") == "broken"
    assert 3 in shown_seqs(page)
    shoot(page, "audit-broken")
    axe(page)
    page_log.assert_clean()


# --- who may ---------------------------------------------------------------------------


def test_a_user_session_gets_403_and_a_service_cannot_mint_an_auditor_link(
    ui: Ui, trail: Trail, page: Page
) -> None:
    user = ui.user(trail.org, enrolled=False)
    ui.enter(page, "user", user.user_id, trail.org)
    answer = page.goto(f"{ui.base}/ui/audit")
    assert answer is not None and answer.status == 403
    assert page.locator("html[data-state='ready']").count() == 0
    for other in ("audit", "admin"):
        got = ui.call(
            "POST",
            f"/v1/users/{user.user_id}/ui-links",
            ui.service_token(trail.org),
            {"page": other},
        )
        assert got.status == 422, got.body


def test_the_print_stylesheet_keeps_the_table_and_drops_the_controls(
    ui: Ui, trail: Trail, page: Page
) -> None:
    open_audit(ui, page, trail.org)
    apply(page, user="alice")
    page.emulate_media(media="print")
    assert not page.locator("#filters").is_visible()
    assert not page.locator("#export-csv").is_visible()
    assert page.locator("#events").is_visible()
    assert page.locator("#events .audit-toggle").first.is_visible()  # the seq is printed
    # Paper is about 720 px wide at 96 dpi: the table fits it without a scrollbar.
    page.set_viewport_size({"width": 720, "height": 1000})
    width = page.locator("#events").evaluate("t => t.getBoundingClientRect().width")
    box = page.locator("#events-scroll").evaluate("b => b.getBoundingClientRect().width")
    assert width <= box
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "audit-print-720.png"), full_page=True)
