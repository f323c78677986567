"""Self-service over HTTP (docs/api.md, role `user`): status, enrollment, regeneration
and the sheet, through the real app, the after-commit publisher and a real worker,
on SQLite (embedded) and PostgreSQL. One world per backend and module; every test
makes its own organization.
"""

from __future__ import annotations

import base64
import io
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from xml.etree import ElementTree

import pyotp
import pytest
import segno
from celery.contrib.testing.worker import start_worker
from falcon import testing
from pypdf import PdfReader
from sqlalchemy import select, update

from domain import accounts, audit, limits, regeneration
from domain.audit.types import EventType
from domain.models import AuditEvent, Regeneration, Sheet
from infra.db import utcnow
from tests.support import codes
from tests.support.api_world import ApiWorld, api_world
from tests.support.codes import CODE_RE, WRONG_CODE
from tests.support.settings import backend_settings

ME = "/v1/me/mfa"
ENROLL = "/v1/me/mfa/enrollment"
CONFIRM = "/v1/me/mfa/enrollment/confirm"
REGENERATIONS = "/v1/me/backup-codes/regenerations"
REGENERATION_KEYS = {
    "id",
    "status",
    "reason",
    "failure",
    "created_at",
    "completed_at",
    "expires_at",
    "code_count",
    "links",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

NO_LIMITS = {"totp_throttled_until": None, "totp_locked": False, "backup_codes_locked": False}

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    """The app with a worker thread; starting and stopping a worker costs seconds,
    so it is shared by the module's tests (each on an organization of its own)."""
    with api_world(backend_settings(request, tmp_path_factory.mktemp("world"))) as built:
        yield built


@pytest.fixture(scope="module", params=BACKENDS)
def idle_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    """No worker: whatever is requested stays queued."""
    settings = backend_settings(request, tmp_path_factory.mktemp("idle"))
    with api_world(settings, worker=False) as built:
        yield built


# --- helpers -------------------------------------------------------------------------


def problem(result: testing.Result, status: int, slug: str) -> dict[str, Any]:
    assert result.status_code == status, result.text
    assert result.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = result.json
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    return body


def wrong_totp(world: ApiWorld, org: str, user: str = "alice") -> str:
    """A well-formed code that no step near now accepts."""
    return codes.wrong_totp(world.secrets[(org, user)])


def regenerate(world: ApiWorld, token: str, totp: str, key: str | None = None) -> testing.Result:
    headers = {"Idempotency-Key": key} if key else None
    return world.call("POST", REGENERATIONS, token, json={"totp": totp}, headers=headers)


def ready_codes(world: ApiWorld, token: str, regeneration_id: str) -> list[str]:
    done = world.await_status(token, regeneration_id)
    assert done["status"] == "ready", done
    return world.sheet_text(token, regeneration_id)


def enrolled_with_codes(world: ApiWorld, org: str, user: str = "alice") -> tuple[str, list[str]]:
    token, confirmed = world.enroll(org, user)
    return token, ready_codes(world, token, confirmed["regeneration"]["id"])


def verify(world: ApiWorld, org: str, user: str, code: str) -> dict[str, Any]:
    service = world.token(org, f"signin-{user}", "service")
    got = world.call("POST", f"/v1/users/{user}/backup-codes/verify", service, json={"code": code})
    assert got.status_code == 200, got.text
    return dict(got.json)


def status(world: ApiWorld, token: str) -> dict[str, Any]:
    got = world.call("GET", ME, token)
    assert got.status_code == 200, got.text
    return dict(got.json)


# --- status and enrollment -------------------------------------------------------------


def test_status_before_enrollment_has_no_codes(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    got = world.call("GET", ME, token)
    assert got.status_code == 200
    assert got.json == {
        "enrolled": False,
        "enrolled_at": None,
        "backup_codes_enabled": True,
        "backup_codes": None,
        "last_set_expired_unseen": False,
        "limits": NO_LIMITS,
    }


def test_enrollment_answers_a_secret_and_uri_never_cached(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    got = world.call("POST", ENROLL, token)
    assert got.status_code == 201, got.text
    assert got.headers["Cache-Control"] == "no-store"
    assert set(got.json) == {"secret", "otpauth_uri", "qr_svg"}
    assert re.fullmatch(r"[A-Z2-7]{16,}=*", got.json["secret"])
    assert got.json["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={got.json['secret']}" in got.json["otpauth_uri"]
    assert status(world, token)["enrolled"] is False  # pending until confirmed


def test_enrollment_qr_svg_is_a_scriptless_svg_of_the_uri(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    got = world.call("POST", ENROLL, token).json
    svg = ElementTree.fromstring(got["qr_svg"])  # noqa: S314 (our own answer, in a test)
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert svg.get("viewBox") and svg.get("width") is None  # the page sizes it
    elements = [e.tag.rsplit("}", 1)[-1] for e in svg.iter()]
    assert set(elements) <= {"svg", "title", "path"}, elements  # no script, link, image, use
    attributes = {name for e in svg.iter() for name in e.attrib}
    assert not {a for a in attributes if a.lower().startswith("on") or "href" in a.lower()}
    # The drawn modules are the QR symbol of the URI (segno's encoding of it, quiet zone 4).
    symbol = segno.make(got["otpauth_uri"], error="m", micro=False, boost_error=False)
    expected = {
        (x + 4, y + 4) for y, row in enumerate(symbol.matrix) for x, v in enumerate(row) if v
    }
    assert _dark_modules(svg) == expected


def _dark_modules(svg: ElementTree.Element) -> set[tuple[int, int]]:
    """The modules an SVG of segno's form paints: a white background path, then one
    stroked path of horizontal runs, `M x y+0.5` then `h n` (n dark modules) and
    `m dx dy` (relative moves)."""
    paths = svg.findall("{http://www.w3.org/2000/svg}path")
    assert [p.get("fill") for p in paths] == ["#fff", None]
    path = paths[1]
    assert path.get("stroke") == "#000"
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path.get("d", "")):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            dark |= {(int(x) + i, int(y)) for i in range(int(a))}
            x += float(a)
    return dark


def test_enrollment_restart_replaces_the_pending_secret(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    first = world.call("POST", ENROLL, token).json["secret"]
    second = world.call("POST", ENROLL, token)
    assert second.status_code == 201
    assert second.json["secret"] != first
    stale = world.call("POST", CONFIRM, token, json={"totp": pyotp.TOTP(first).now()})
    problem(stale, 422, "invalid-totp")
    fresh = world.call(
        "POST", CONFIRM, token, json={"totp": pyotp.TOTP(second.json["secret"]).now()}
    )
    assert fresh.status_code == 201, fresh.text


def test_enrolling_again_after_confirmation_is_409_already_enrolled(world: ApiWorld) -> None:
    org = world.org()
    token, _ = world.enroll(org)
    problem(world.call("POST", ENROLL, token), 409, "already-enrolled")
    assert status(world, token)["enrolled"] is True


def test_confirming_with_a_wrong_code_is_422_invalid_totp(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    world.secrets[(org, "alice")] = world.call("POST", ENROLL, token).json["secret"]
    got = world.call("POST", CONFIRM, token, json={"totp": wrong_totp(world, org)})
    problem(got, 422, "invalid-totp")
    assert got.headers["Cache-Control"] == "no-store"
    assert status(world, token)["enrolled"] is False


def test_five_wrong_confirmations_lock_the_user_out_with_429(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    world.secrets[(org, "alice")] = world.call("POST", ENROLL, token).json["secret"]
    bad = {"totp": wrong_totp(world, org)}
    for _ in range(world.settings.lockout_threshold):
        problem(world.call("POST", CONFIRM, token, json=bad), 422, "invalid-totp")
    locked = world.call("POST", CONFIRM, token, json={"totp": world.totp(org)})
    problem(locked, 429, "too-many-attempts")
    assert 0 < int(locked.headers["Retry-After"]) <= world.settings.lockout_window_seconds
    assert status(world, token)["enrolled"] is False


def test_confirming_without_a_pending_enrollment_is_409(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    got = world.call("POST", CONFIRM, token, json={"totp": "123456"})
    problem(got, 409, "no-pending-enrollment")
    assert status(world, token)["enrolled"] is False


def test_confirmation_issues_the_first_set_through_the_pipeline(world: ApiWorld) -> None:
    org = world.org(code_count=7)
    token, confirmed = world.enroll(org)
    assert confirmed["enrolled"] is True
    first = confirmed["regeneration"]
    assert set(first) == REGENERATION_KEYS
    assert (first["reason"], first["code_count"]) == ("enrollment", 7)
    assert first["status"] in ("queued", "processing", "ready")
    codes = ready_codes(world, token, first["id"])
    assert len(codes) == 7 and all(CODE_RE.fullmatch(c) for c in codes)
    current = status(world, token)
    assert current["enrolled"] is True
    backup = current["backup_codes"]
    assert (backup["remaining"], backup["total"], backup["low"]) == (7, 7, False)
    assert backup["set_id"] and TIMESTAMP.match(backup["generated_at"])


def test_low_is_true_once_two_or_fewer_codes_remain(world: ApiWorld) -> None:
    org = world.org()
    token, codes = enrolled_with_codes(world, org)
    seen = []
    for code in codes[:4]:
        assert verify(world, org, "alice", code)["accepted"] is True
        backup = status(world, token)["backup_codes"]
        seen.append((backup["remaining"], backup["total"], backup["low"]))
    assert seen == [(4, 5, False), (3, 5, False), (2, 5, True), (1, 5, True)]


def test_disabled_organization_enrolls_without_codes_and_refuses_regeneration(
    world: ApiWorld,
) -> None:
    org = world.org(enabled=False)
    token, confirmed = world.enroll(org)
    assert confirmed == {"enrolled": True, "regeneration": None}
    body = status(world, token)
    assert TIMESTAMP.match(body.pop("enrolled_at"))
    assert body == {
        "enrolled": True,
        "backup_codes_enabled": False,
        "backup_codes": None,
        "last_set_expired_unseen": False,
        "limits": NO_LIMITS,
    }
    got = regenerate(world, token, world.totp(org, offset_steps=1))
    problem(got, 403, "backup-codes-disabled")


# --- requesting a regeneration -----------------------------------------------------------


def test_regeneration_is_accepted_with_202_and_location(world: ApiWorld) -> None:
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    got = regenerate(world, token, world.totp(org, offset_steps=1))
    assert got.status_code == 202, got.text
    body = got.json
    assert set(body) == REGENERATION_KEYS
    rid = body["id"]
    assert got.headers["Location"].endswith(f"{REGENERATIONS}/{rid}")
    assert got.headers["Cache-Control"] == "no-store"
    assert body["links"] == {
        "self": f"{REGENERATIONS}/{rid}",
        "sheet": f"{REGENERATIONS}/{rid}/sheet",
    }
    assert (body["status"], body["reason"], body["failure"]) == ("queued", "regeneration", None)
    assert (body["completed_at"], body["expires_at"], body["code_count"]) == (None, None, 5)
    assert TIMESTAMP.match(body["created_at"])
    done = world.await_status(token, rid)
    assert done["status"] == "ready", done
    assert TIMESTAMP.match(done["completed_at"]) and TIMESTAMP.match(done["expires_at"])


def test_old_codes_are_refused_after_a_regeneration(world: ApiWorld) -> None:
    org = world.org()
    token, old = enrolled_with_codes(world, org)
    old_set = status(world, token)["backup_codes"]["set_id"]
    rid = regenerate(world, token, world.totp(org, offset_steps=1)).json["id"]
    new = ready_codes(world, token, rid)
    assert not set(new) & set(old)
    assert status(world, token)["backup_codes"]["set_id"] != old_set
    assert verify(world, org, "alice", old[0])["accepted"] is False
    assert verify(world, org, "alice", new[0]) == {
        "accepted": True,
        "mistyped": False,
        "remaining": 4,
        "low": False,
    }


def test_same_idempotency_key_and_body_answer_the_same_regeneration(world: ApiWorld) -> None:
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    totp = world.totp(org, offset_steps=1)
    first = regenerate(world, token, totp, key="key-1")
    again = regenerate(world, token, totp, key="key-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json["id"] == first.json["id"]
    assert again.headers["Location"] == first.headers["Location"]
    world.await_status(token, first.json["id"])
    later = regenerate(world, token, world.totp(org, offset_steps=2), key="key-2")
    assert later.status_code == 202, later.text
    assert later.json["id"] != first.json["id"]


def test_a_second_regeneration_while_one_is_pending_is_409_naming_it(
    idle_world: ApiWorld,
) -> None:
    """One pending regeneration a user: a flood of requests (a replayed code in a
    loop) cannot fill the shared queue."""
    org = idle_world.org()
    token, confirmed = idle_world.enroll(org)  # no worker: the first set stays queued
    first = confirmed["regeneration"]
    for offset in (1, 2):
        got = regenerate(idle_world, token, idle_world.totp(org, offset_steps=offset))
        problem(got, 409, "regeneration-pending")
        assert got.headers["Location"] == first["links"]["self"]
    auditor = idle_world.token(org, "security", "auditor")
    refused = idle_world.call(
        "GET", "/v1/audit/events", auditor, params={"type": EventType.REGENERATION_REFUSED}
    ).json["events"]
    assert [e["details"]["reason"] for e in refused] == ["regeneration-pending"] * 2


def test_same_idempotency_key_with_another_body_is_422(world: ApiWorld) -> None:
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    code = world.totp(org, offset_steps=1)  # once: a step boundary must not change the body
    first = regenerate(world, token, code, key="k")
    assert first.status_code == 202
    got = regenerate(world, token, wrong_totp(world, org), key="k")
    problem(got, 422, "idempotency-key-reused")
    # The key stays bound to the first request.
    assert regenerate(world, token, code, key="k").json["id"] == first.json["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"totp": "12345"}, "totp"),
        ({"totp": "1234567"}, "totp"),
        ({"totp": "12a456"}, "totp"),
        ({"totp": " 123456"}, "totp"),
        ({"totp": "\u0661\u0662\u0663\u0664\u0665\u0666"}, "totp"),  # Arabic-Indic digits
        ({"totp": 123456}, "totp"),
        ({"totp": None}, "totp"),
        ({"totp": "123456", "extra": 1}, "extra"),
        ({}, "totp"),
    ],
)
def test_malformed_regeneration_requests_are_refused_at_once(
    world: ApiWorld, body: dict[str, Any], field: str
) -> None:
    # Not enrolled: a 422 rather than 409 shows the body is judged first.
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    got = world.call("POST", REGENERATIONS, token, json=body)
    assert problem(got, 422, "invalid-request")["field"] == field


def test_regeneration_without_enrollment_is_409_mfa_not_enrolled(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token = world.token(org, "alice", "user")
    problem(regenerate(world, token, "123456"), 409, "mfa-not-enrolled")
    assert status(world, token)["backup_codes"] is None  # nothing was generated


def test_five_failed_totps_lock_the_user_out_with_429(world: ApiWorld) -> None:
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    bad = wrong_totp(world, org)
    for _ in range(world.settings.lockout_threshold):
        got = regenerate(world, token, bad)
        assert got.status_code == 202, got.text  # intake cannot judge it: the worker does
        assert world.await_status(token, got.json["id"])["failure"] == "invalid-totp"
    locked = regenerate(world, token, world.totp(org, offset_steps=1))
    problem(locked, 429, "too-many-attempts")
    wait = int(locked.headers["Retry-After"])
    assert 0 < wait <= world.settings.lockout_window_seconds
    until = status(world, token)["limits"]["totp_throttled_until"]
    assert until is not None and TIMESTAMP.match(until)


def test_a_queued_regeneration_succeeds_although_failures_land_before_the_worker(
    idle_world: ApiWorld,
) -> None:
    """The worker judges a request for its acceptance: failures that come between
    (an attacker's wrong backup codes from many addresses, wrong TOTPs) throttle later
    requests, not this one. (It used to fail too-many-attempts.)"""
    world = idle_world
    org = world.org()
    token, confirmed = world.enroll(org)
    with world.services.unit_of_work() as uow:  # the first set, made as the worker would
        regeneration.process_regeneration(
            uow, world.services, confirmed["regeneration"]["id"], utcnow()
        )
    queued = regenerate(world, token, world.totp(org, offset_steps=1))
    assert queued.status_code == 202, queued.text
    service = world.token(org, "sign-in", "service")
    for n in range(25):
        body = {"code": WRONG_CODE, "client_ip": f"192.0.2.{n % 5 + 1}"}
        got = world.call("POST", "/v1/users/alice/backup-codes/verify", service, json=body)
        assert got.status_code in (200, 429), got.text
    with world.services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, org, "alice"))
        for i in range(5):
            at = utcnow() + timedelta(milliseconds=i)
            limits.record_failure(
                uow, user, limits.TOTP, None, at, audit.SYSTEM, world.services.limits
            )
    assert status(world, token)["limits"]["totp_throttled_until"] is not None
    with start_worker(
        world.publisher.app, pool="solo", perform_ping_check=False, shutdown_timeout=10
    ):
        done = world.await_status(token, queued.json["id"])
    assert (done["status"], done["failure"]) == ("ready", None)


def test_a_hundred_consecutive_totp_failures_lock_it_until_an_unlock(world: ApiWorld) -> None:
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    with world.services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, org, "alice"))
        start = utcnow() - timedelta(days=2)
        for i in range(100):  # 5 every 15 minutes, as fast as the throttle lets them
            at = start + timedelta(minutes=15 * (i // 5), seconds=i % 5)
            limits.record_failure(
                uow, user, limits.TOTP, None, at, audit.SYSTEM, world.services.limits
            )
    locked = regenerate(world, token, world.totp(org, offset_steps=1))
    problem(locked, 429, "totp-locked")
    assert "Retry-After" not in locked.headers
    assert status(world, token)["limits"] == {
        "totp_throttled_until": None,
        "totp_locked": True,
        "backup_codes_locked": False,
    }
    admin = world.token(org, "help-desk", "admin")
    assert world.call("POST", "/v1/users/alice/mfa/unlock", admin).status_code == 204
    assert status(world, token)["limits"] == NO_LIMITS
    again = regenerate(world, token, world.totp(org, offset_steps=1))
    assert again.status_code == 202, again.text
    assert world.await_status(token, again.json["id"])["status"] == "ready"


def test_a_replayed_code_counts_as_a_failure(world: ApiWorld) -> None:
    """Resubmitting the current, already used code in a loop: five replays, then 429
    (it used to queue one regeneration per request, with no end)."""
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    used = world.totp(org, offset_steps=1)
    assert world.await_status(token, regenerate(world, token, used).json["id"])["status"] == "ready"
    queued = 0
    for _ in range(10):  # bounded; all within the 15-minute window
        got = regenerate(world, token, used)
        if got.status_code == 429:
            break
        assert got.status_code == 202, got.text
        queued += 1
        assert world.await_status(token, got.json["id"])["failure"] == "totp-replayed"
    assert queued == world.settings.lockout_threshold
    assert status(world, token)["limits"]["totp_throttled_until"] is not None


def test_regenerations_of_others_are_404(world: ApiWorld) -> None:
    org = world.org()
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    world.await_status(token, rid)
    neighbour = world.user(org, "bob")
    same_org = world.token(org, neighbour, "user")
    elsewhere_org = world.org()
    world.user(elsewhere_org, "alice")  # the same external id in another organization
    elsewhere = world.token(elsewhere_org, "alice", "user")
    for other in (same_org, elsewhere):
        for path in (f"{REGENERATIONS}/{rid}", f"{REGENERATIONS}/{rid}/sheet"):
            problem(world.call("GET", path, other), 404, "not-found")
    problem(world.call("GET", f"{REGENERATIONS}/not-a-uuid", token), 404, "not-found")
    # Their attempts took nothing: the owner still gets the sheet.
    assert len(world.sheet_text(token, rid)) == 5


# --- the sheet -------------------------------------------------------------------------------


def test_sheet_pdf_is_served_once_as_a_dated_attachment(world: ApiWorld) -> None:
    org = world.org()
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    done = world.await_status(token, rid)
    got = world.call("GET", f"{REGENERATIONS}/{rid}/sheet", token)
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"] == "application/pdf"
    assert got.headers["Cache-Control"] == "no-store"
    day = done["completed_at"][:10]
    assert re.fullmatch(
        rf'attachment; filename="?backup-codes-{day}\.pdf"?', got.headers["Content-Disposition"]
    )
    assert got.content.startswith(b"%PDF-")
    printed = "".join(page.extract_text() for page in PdfReader(io.BytesIO(got.content)).pages)
    assert status(world, token)["backup_codes"]["set_id"] in printed
    for accept in ("application/pdf", "text/plain"):
        again = world.call("GET", f"{REGENERATIONS}/{rid}/sheet", token, headers={"Accept": accept})
        problem(again, 410, "sheet-gone")
    assert world.await_status(token, rid)["status"] == "retrieved"


def test_sheet_text_form_is_one_code_a_line_and_ends_retrieval(world: ApiWorld) -> None:
    org = world.org(code_count=3)
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    world.await_status(token, rid)
    path = f"{REGENERATIONS}/{rid}/sheet"
    got = world.call("GET", path, token, headers={"Accept": "text/plain"})
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"].startswith("text/plain")
    assert got.headers["Cache-Control"] == "no-store"
    lines = got.text.splitlines()
    assert len(lines) == 3 and all(CODE_RE.fullmatch(line) for line in lines)
    assert verify(world, org, "alice", lines[1].lower().replace("-", " "))["accepted"] is True
    problem(world.call("GET", path, token), 410, "sheet-gone")


def test_simultaneous_sheet_requests_serve_it_exactly_once(world: ApiWorld) -> None:
    org = world.org()
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    world.await_status(token, rid)
    start = threading.Barrier(2)
    results: list[testing.Result] = []

    def fetch(accept: str) -> None:
        start.wait(timeout=10)
        results.append(
            world.call("GET", f"{REGENERATIONS}/{rid}/sheet", token, headers={"Accept": accept})
        )

    threads = [threading.Thread(target=fetch, args=(a,)) for a in ("application/pdf", "text/plain")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r.status_code for r in results) == [200, 410]
    loser = next(r for r in results if r.status_code == 410)
    problem(loser, 410, "sheet-gone")


def test_sheet_json_form_holds_codes_and_pdf_from_one_retrieval(world: ApiWorld) -> None:
    org = world.org(code_count=4)
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    done = world.await_status(token, rid)
    path = f"{REGENERATIONS}/{rid}/sheet"
    got = world.call("GET", path, token, headers={"Accept": "application/json"})
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"].startswith("application/json")
    assert got.headers["Cache-Control"] == "no-store"
    assert "Content-Disposition" not in got.headers
    body = got.json
    assert set(body) == {"set_id", "generated_at", "codes", "filename", "pdf"}
    assert body["set_id"] == status(world, token)["backup_codes"]["set_id"]
    assert body["generated_at"] == done["completed_at"]
    assert body["filename"] == f"backup-codes-{done['completed_at'][:10]}.pdf"
    assert len(body["codes"]) == 4 and all(CODE_RE.fullmatch(c) for c in body["codes"])
    pdf = base64.b64decode(body["pdf"], validate=True)
    printed = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert body["set_id"] in printed
    assert all(code in printed for code in body["codes"])  # the PDF holds the same codes
    assert verify(world, org, "alice", body["codes"][0])["accepted"] is True
    for accept in ("application/json", "application/pdf", "text/plain"):
        problem(world.call("GET", path, token, headers={"Accept": accept}), 410, "sheet-gone")


def test_a_sheet_fetched_as_pdf_is_gone_for_json_too(world: ApiWorld) -> None:
    org = world.org()
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    world.await_status(token, rid)
    path = f"{REGENERATIONS}/{rid}/sheet"
    assert world.call("GET", path, token, headers={"Accept": "text/plain"}).status_code == 200
    problem(
        world.call("GET", path, token, headers={"Accept": "application/json"}), 410, "sheet-gone"
    )


@pytest.mark.parametrize(
    "accepts",
    [("application/json", "application/json"), ("application/json", "application/pdf")],
    ids=["json-json", "json-pdf"],
)
def test_simultaneous_json_sheet_requests_serve_it_exactly_once(
    world: ApiWorld, accepts: tuple[str, str]
) -> None:
    org = world.org()
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    world.await_status(token, rid)
    start = threading.Barrier(2)
    results: list[testing.Result] = []

    def fetch(accept: str) -> None:
        start.wait(timeout=10)
        results.append(
            world.call("GET", f"{REGENERATIONS}/{rid}/sheet", token, headers={"Accept": accept})
        )

    threads = [threading.Thread(target=fetch, args=(a,)) for a in accepts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r.status_code for r in results) == [200, 410]
    problem(next(r for r in results if r.status_code == 410), 410, "sheet-gone")


def test_sheet_of_a_queued_regeneration_is_409_not_ready(idle_world: ApiWorld) -> None:
    org = idle_world.org()
    token, confirmed = idle_world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    got = idle_world.call("GET", f"{REGENERATIONS}/{rid}/sheet", token)
    problem(got, 409, "not-ready")
    assert int(got.headers["Retry-After"]) >= 1
    assert idle_world.call("GET", f"{REGENERATIONS}/{rid}", token).json["status"] == "queued"


def test_sheet_of_a_failed_regeneration_is_409_regeneration_failed(world: ApiWorld) -> None:
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    rid = regenerate(world, token, wrong_totp(world, org)).json["id"]
    done = world.await_status(token, rid)
    assert (done["status"], done["failure"]) == ("failed", "invalid-totp")
    problem(world.call("GET", f"{REGENERATIONS}/{rid}/sheet", token), 409, "regeneration-failed")


def test_sheet_not_fetched_in_time_is_410_sheet_expired(world: ApiWorld) -> None:
    org = world.org()
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    world.await_status(token, rid)
    # Instead of waiting for the TTL: the deadline moves into the past.
    with world.services.unit_of_work() as uow:
        uow.session.execute(
            update(Regeneration)
            .where(Regeneration.id == rid)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    path = f"{REGENERATIONS}/{rid}/sheet"
    problem(world.call("GET", path, token), 410, "sheet-expired")
    problem(world.call("GET", path, token, headers={"Accept": "text/plain"}), 410, "sheet-expired")
    assert world.await_status(token, rid)["status"] == "expired"


def test_request_id_follows_a_regeneration_into_the_workers_events(world: ApiWorld) -> None:
    org = world.org()
    token, _ = enrolled_with_codes(world, org)
    got = world.call(
        "POST",
        REGENERATIONS,
        token,
        json={"totp": world.totp(org, offset_steps=1)},
        headers={"X-Request-Id": "regen-trace-1"},
    )
    assert got.headers["X-Request-Id"] == "regen-trace-1"
    world.await_status(token, got.json["id"])
    auditor = world.token(org, "security", "auditor")
    found = world.call(
        "GET", "/v1/audit/events", auditor, params={"request_id": "regen-trace-1"}
    ).json["events"]
    kinds = {e["type"] for e in found}
    assert {
        EventType.REGENERATION_REQUESTED,  # at intake
        EventType.REGENERATION_STARTED,  # the worker's, on the request's behalf
        EventType.SHEET_RENDERED,
        EventType.REGENERATION_SUCCEEDED,
    } <= kinds, kinds
    assert all(e["request_id"] == "regen-trace-1" for e in found)


# --- a sheet nobody fetched (issue 10, 7(a)) -------------------------------------------


def _unfetched_ready(world: ApiWorld, org: str) -> tuple[str, str, list[str]]:
    """(user token, regeneration id, its codes read from storage, not retrieved)."""
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    assert world.await_status(token, rid)["status"] == "ready"
    with world.services.unit_of_work() as uow:
        sheet = uow.session.get(Sheet, rid)
        assert sheet is not None
        text = world.services.box.decrypt_text(sheet.text_ciphertext)
    return token, rid, [line for line in text.splitlines() if CODE_RE.fullmatch(line.strip())]


def _past_deadline(world: ApiWorld, rid: str) -> None:
    """The sheet's deadline moves into the past, and the expiry sweep runs."""
    past = utcnow() - timedelta(seconds=1)
    with world.services.unit_of_work() as uow:
        uow.session.execute(
            update(Regeneration).where(Regeneration.id == rid).values(expires_at=past)
        )
        uow.session.execute(
            update(Sheet).where(Sheet.regeneration_id == rid).values(expires_at=past)
        )
    with world.services.unit_of_work() as uow:
        regeneration.expire_sheets(uow, utcnow())


def _events(world: ApiWorld, org: str, type_: str) -> list[AuditEvent]:
    with world.services.unit_of_work() as uow:
        query = select(AuditEvent).where(AuditEvent.org_id == org, AuditEvent.type == type_)
        return list(uow.session.execute(query.order_by(AuditEvent.seq)).scalars())


def test_revocation_deletes_an_unfetched_sheet_whose_fetch_is_then_410(world: ApiWorld) -> None:
    org = world.org()
    token, rid, codes = _unfetched_ready(world, org)
    assert len(codes) == 5
    admin = world.token(org, "admin-1", "admin")
    got = world.call("POST", "/v1/users/alice/backup-codes/revocation", admin)
    assert got.status_code == 204, got.text
    with world.services.unit_of_work() as uow:
        assert uow.session.get(Sheet, rid) is None
    assert world.await_status(token, rid)["status"] == "expired"
    problem(world.call("GET", f"{REGENERATIONS}/{rid}/sheet", token), 410, "sheet-expired")
    [expired] = _events(world, org, EventType.SHEET_EXPIRED)
    assert (expired.details, expired.actor_principal_id) == ({"regeneration_id": rid}, "admin-1")
    assert verify(world, org, "alice", codes[0])["accepted"] is False
    body = status(world, token)
    assert (body["backup_codes"], body["last_set_expired_unseen"]) == (None, True)


def test_a_set_whose_sheet_expired_unfetched_is_deactivated_until_a_regeneration(
    world: ApiWorld,
) -> None:
    org = world.org()
    token, rid, codes = _unfetched_ready(world, org)
    assert status(world, token)["last_set_expired_unseen"] is False
    _past_deadline(world, rid)
    body = status(world, token)
    assert (body["backup_codes"], body["last_set_expired_unseen"]) == (None, True)
    assert verify(world, org, "alice", codes[0])["accepted"] is False
    [deactivated] = _events(world, org, EventType.CODES_DEACTIVATED)
    assert deactivated.details == {"regeneration_id": rid, "count": 5, "reason": "sheet-expired"}
    # A regeneration gives working codes again and clears the flag.
    again = regenerate(world, token, world.totp(org, offset_steps=1)).json["id"]
    fresh = ready_codes(world, token, again)
    body = status(world, token)
    assert body["last_set_expired_unseen"] is False
    assert (body["backup_codes"]["remaining"], body["backup_codes"]["total"]) == (5, 5)
    assert verify(world, org, "alice", fresh[0])["accepted"] is True


def test_a_set_whose_sheet_was_fetched_stays_active_past_the_deadline(world: ApiWorld) -> None:
    org = world.org()
    token, confirmed = world.enroll(org)
    rid = confirmed["regeneration"]["id"]
    codes = ready_codes(world, token, rid)
    _past_deadline(world, rid)
    assert world.await_status(token, rid)["status"] == "retrieved"
    body = status(world, token)
    assert body["last_set_expired_unseen"] is False
    assert body["backup_codes"]["remaining"] == 5
    assert _events(world, org, EventType.CODES_DEACTIVATED) == []
    assert verify(world, org, "alice", codes[0])["accepted"] is True


def test_status_names_when_the_set_was_generated_and_last_used(world: ApiWorld) -> None:
    org = world.org()
    token, codes = enrolled_with_codes(world, org)
    backup = status(world, token)["backup_codes"]
    assert TIMESTAMP.match(backup["generated_at"]) and backup["last_used_at"] is None
    assert backup["format"] == 16  # a set made now: nothing to invite the user to
    assert verify(world, org, "alice", codes[0])["accepted"] is True
    used = status(world, token)["backup_codes"]["last_used_at"]
    assert TIMESTAMP.match(used) and used >= backup["generated_at"]
