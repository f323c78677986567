"""Throttles of failed token authentications and refused calls, the User-Agent as
sent, and the service's own request id (issue 10, points 7(f) and 7(g)).

Over the API on SQLite and on PostgreSQL with RabbitMQ. Each test calls from its
own source address (the test client's remote_addr), so counts never mix; the
counters are one-minute windows, so a run that straddles a window's end is
repeated from a new address (`in_one_window`).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from falcon import testing
from sqlalchemy import func, select

from domain import audit, throttles, tokens
from domain.audit.types import EventType
from domain.models import AuditEvent
from tests.support.api_world import ApiWorld, world_on
from tests.support.codes import WRONG_CODE
from tests.support.throttling import fresh_source, in_one_window


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    with world_on(request, tmp_path_factory, "throttles") as built:
        yield built


def issue(world: ApiWorld, org: str, principal: str, role: str) -> str:
    with world.services.unit_of_work() as uow:
        _, plaintext = tokens.issue(uow, org, principal, role, audit.CLI)
    return plaintext


def event_count(world: ApiWorld, org: str) -> int:
    with world.services.unit_of_work() as uow:
        return int(
            uow.session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.org_id == org)
            )
            or 0
        )


def assert_throttled(got: testing.Result) -> None:
    assert got.status_code == 429, got.text
    assert got.json["type"] == "/problems/too-many-attempts"
    assert 1 <= int(got.headers["Retry-After"]) <= throttles.WINDOW_SECONDS


# --- failed token authentications: 30 a minute per source -----------------------------


def test_the_31st_bad_token_from_a_source_is_429(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    good = issue(world, org, "alice", "user")

    def run(source: str) -> list[testing.Result]:
        bad = [
            world.call("GET", "/v1/me/mfa", f"mfa_unknown{n}", remote_addr=source)
            for n in range(throttles.AUTH_FAILURES_PER_MINUTE + 1)
        ]
        return bad

    answers = in_one_window(run)
    assert [a.status_code for a in answers[:-1]] == [401] * throttles.AUTH_FAILURES_PER_MINUTE
    assert_throttled(answers[-1])
    # Another source is not throttled by that one's failures.
    assert (
        world.call("GET", "/v1/me/mfa", "mfa_unknown", remote_addr="203.0.113.9").status_code == 401
    )
    # Only failures count: a good token still works (256-bit tokens are not guessed).
    assert world.call("GET", "/v1/me/mfa", good, remote_addr="203.0.113.9").status_code == 200


def test_missing_tokens_count_as_failed_authentications(world: ApiWorld) -> None:
    def run(source: str) -> list[int]:
        return [
            world.call("GET", "/v1/me/mfa", remote_addr=source).status_code
            for _ in range(throttles.AUTH_FAILURES_PER_MINUTE + 1)
        ]

    statuses = in_one_window(run)
    assert statuses == [401] * throttles.AUTH_FAILURES_PER_MINUTE + [429]


# --- refused calls: 60 a minute per (token, source), before the audit append -------------


def test_the_61st_404_in_a_minute_is_429_and_appends_nothing(world: ApiWorld) -> None:
    org = world.org()
    service = issue(world, org, "frontend", "service")
    verify_nobody = "/v1/users/nobody/backup-codes/verify"

    def run(source: str) -> tuple[list[int], testing.Result, int, int]:
        statuses = [
            world.call(
                "POST", verify_nobody, service, json={"code": "x"}, remote_addr=source
            ).status_code
            for _ in range(throttles.REFUSALS_PER_MINUTE)
        ]
        before = event_count(world, org)
        last = world.call("POST", verify_nobody, service, json={"code": "x"}, remote_addr=source)
        return statuses, last, before, event_count(world, org)

    statuses, last, before, after = in_one_window(run)
    assert statuses == [404] * throttles.REFUSALS_PER_MINUTE
    assert_throttled(last)
    assert after == before


@pytest.mark.parametrize("path", ["/v1/org/policy", "/v1/audit/events"])
def test_the_61st_audited_403_is_429_and_never_reaches_the_chain(
    world: ApiWorld, path: str
) -> None:
    org = world.org()
    world.user(org)
    user = issue(world, org, "alice", "user")

    def run(source: str) -> tuple[list[int], testing.Result, int, int]:
        before = event_count(world, org)
        statuses = [
            world.call("GET", path, user, remote_addr=source).status_code
            for _ in range(throttles.REFUSALS_PER_MINUTE)
        ]
        middle = event_count(world, org)
        last = world.call("GET", path, user, remote_addr=source)
        assert middle - before == throttles.REFUSALS_PER_MINUTE  # one api.access.denied each
        return statuses, last, middle, event_count(world, org)

    statuses, last, middle, after = in_one_window(run)
    assert statuses == [403] * throttles.REFUSALS_PER_MINUTE
    assert_throttled(last)
    assert after == middle
    # The same token from another source, and another token from the same, still answer.
    assert world.call("GET", path, user, remote_addr="203.0.113.10").status_code == 403


def test_the_61st_backup_codes_disabled_is_429_before_its_refusal_is_recorded(
    world: ApiWorld,
) -> None:
    """A refusal the domain records (backup-codes-disabled, a 403) is gated like the
    middleware's own 403s: past the budget nothing more reaches the chain."""
    org = world.org(enabled=False)
    world.user(org)
    user = issue(world, org, "alice", "user")
    regenerations = "/v1/me/backup-codes/regenerations"

    def run(source: str) -> tuple[list[str], testing.Result, int, int]:
        before = event_count(world, org)
        answers = [
            world.call("POST", regenerations, user, json={"totp": "123456"}, remote_addr=source)
            for _ in range(throttles.REFUSALS_PER_MINUTE)
        ]
        middle = event_count(world, org)
        last = world.call("POST", regenerations, user, json={"totp": "123456"}, remote_addr=source)
        assert middle - before == throttles.REFUSALS_PER_MINUTE  # one refusal event each
        return [a.json["type"] for a in answers], last, middle, event_count(world, org)

    types, last, middle, after = in_one_window(run)
    assert types == ["/problems/backup-codes-disabled"] * throttles.REFUSALS_PER_MINUTE
    assert_throttled(last)
    assert after == middle


def test_a_throttled_service_token_still_gets_the_200_of_verify(world: ApiWorld) -> None:
    org = world.org()
    world.enroll(org, "alice")
    service = issue(world, org, "frontend", "service")

    def run(source: str) -> tuple[testing.Result, testing.Result]:
        for _ in range(throttles.REFUSALS_PER_MINUTE):
            world.call(
                "POST",
                "/v1/users/nobody/backup-codes/verify",
                service,
                json={"code": "x"},
                remote_addr=source,
            )
        refused = world.call(
            "POST",
            "/v1/users/nobody/backup-codes/verify",
            service,
            json={"code": "x"},
            remote_addr=source,
        )
        answered = world.call(
            "POST",
            "/v1/users/alice/backup-codes/verify",
            service,
            json={"code": WRONG_CODE},
            remote_addr=source,
        )
        return refused, answered

    refused, answered = in_one_window(run)
    assert_throttled(refused)
    assert answered.status_code == 200, answered.text
    assert answered.json["accepted"] is False


# --- request ids and user agents ---------------------------------------------------------


def test_two_requests_with_one_request_id_have_their_own_server_request_ids(
    world: ApiWorld,
) -> None:
    org = world.org()
    world.user(org)
    user = issue(world, org, "alice", "user")
    auditor = issue(world, org, "security", "auditor")
    rid = "chosen-by-the-caller"
    for _ in range(2):
        got = world.call("POST", "/v1/me/mfa/enrollment", user, headers={"X-Request-Id": rid})
        assert got.status_code == 201, got.text

    def find(request_id: str) -> list[dict[str, Any]]:
        got = world.call("GET", "/v1/audit/events", auditor, params={"request_id": request_id})
        assert got.status_code == 200, got.text
        return list(got.json["events"])

    both = find(rid)
    assert [e["type"] for e in both] == [EventType.ENROLLMENT_STARTED] * 2
    assert {e["request_id"] for e in both} == {rid}
    server_ids = [e["server_request_id"] for e in both]
    assert len(set(server_ids)) == 2 and all(server_ids)
    [only] = find(server_ids[1])
    assert only["id"] == both[1]["id"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _post_over_http(world: ApiWorld, token: str, agent: bytes) -> int:
    """One real HTTP request (wsgiref decodes headers as Latin-1, as PEP 3333 says)."""
    server = make_server("127.0.0.1", 0, world.client.app, handler_class=_Quiet)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        conn.putrequest("POST", "/v1/me/mfa/enrollment")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("User-Agent", agent)
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        status = conn.getresponse().status
        conn.close()
    finally:
        thread.join(30)
        server.server_close()
    return status


@pytest.mark.parametrize(
    "sent, stored",
    [
        ("Mozilla/5.0 (café; 日本)".encode(), "Mozilla/5.0 (café; 日本)"),
        (b"legacy caf\xe9", "legacy café"),  # not UTF-8: Latin-1, as it came
    ],
)
def test_a_user_agent_is_stored_as_it_was_sent(world: ApiWorld, sent: bytes, stored: str) -> None:
    org = world.org()
    world.user(org)
    user = issue(world, org, "alice", "user")
    assert _post_over_http(world, user, sent) == 201
    with world.services.unit_of_work() as uow:
        agents = uow.session.scalars(
            select(AuditEvent.user_agent).where(
                AuditEvent.org_id == org, AuditEvent.type == EventType.ENROLLMENT_STARTED
            )
        ).all()
    assert agents == [stored]


def test_throttle_counts_live_in_the_database_and_restart_each_minute(
    world: ApiWorld, tmp_path: Path
) -> None:
    """Another engine on the database sees the same count (processes share it too:
    test_lockout_two_processes); a new window starts from one."""
    from infra.services import Services

    other = Services.build(world.settings)
    try:
        key = throttles.auth_failure_key(fresh_source())
        with world.services.unit_of_work() as uow:
            throttles.hit(uow.session, key, throttles.AUTH_FAILURES_PER_MINUTE, now=1_000_000.0)
        with other.unit_of_work() as uow:
            verdict = throttles.hit(
                uow.session, key, throttles.AUTH_FAILURES_PER_MINUTE, now=1_000_001.0
            )
        assert verdict.count == 2
        with other.unit_of_work() as uow:
            later = throttles.hit(
                uow.session, key, throttles.AUTH_FAILURES_PER_MINUTE, now=1_000_061.0
            )
        assert later.count == 1  # a new window
    finally:
        other.close()


def test_purge_ends_old_windows_and_keeps_the_current_and_previous(world: ApiWorld) -> None:
    now = 2_000_000_000.0  # far ahead of the other tests' windows
    keys = [f"purge:{n}" for n in range(3)]
    with world.services.unit_of_work() as uow:
        throttles.hit(uow.session, keys[0], 30, now=now - 180)  # three windows back
        throttles.hit(uow.session, keys[1], 30, now=now - 60)  # the previous window
        throttles.hit(uow.session, keys[2], 30, now=now)
    with world.services.unit_of_work() as uow:
        assert throttles.purge(uow.session, now=now) >= 1
        assert throttles.peek(uow.session, keys[0], 30, now=now - 180).count == 0
        assert throttles.peek(uow.session, keys[1], 30, now=now - 60).count == 1
        assert throttles.peek(uow.session, keys[2], 30, now=now).count == 1
