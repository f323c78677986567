"""The attempt limits hold across API processes: two real gunicorn processes on one
PostgreSQL database (and the RabbitMQ broker their /readyz checks), failed sign-ins
alternating between them. The counts live in the database, so the sixth attempt
from a source is refused whichever process it reaches, and so is a right code from
that source, on both; other sources are not; and the user's hourly budget across
sources is one budget for both processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from domain import audit, throttles, tokens
from domain.audit.types import EventType
from infra.services import Services
from infra.settings import Settings
from tests.integration.codes_fixtures import row_of
from tests.support.api_processes import Answer, ApiProcess, two_apis
from tests.support.builders import Holder, holder
from tests.support.codes import WRONG_CODE
from tests.support.records import events
from tests.support.settings import pg_amqp_settings

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

WRONG = WRONG_CODE  # well formed, held by nobody


@dataclass
class Pair:
    settings: Settings
    services: Services
    a: ApiProcess
    b: ApiProcess


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, pg_database_url: str, amqp_url: str
) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("two-apis")
    settings = pg_amqp_settings(workdir, pg_database_url, amqp_url)
    services = Services.build(settings)
    try:
        with two_apis(settings, workdir) as (a, b):
            yield Pair(settings, services, a, b)
    finally:
        services.close()


def _service_token(p: Pair, h: Holder) -> str:
    with p.services.unit_of_work() as uow:
        _, plaintext = tokens.issue(uow, h.org_id, "signin-frontend", "service", audit.CLI)
    return plaintext


def _verify(
    api: ApiProcess, token: str, h: Holder, code: str, client_ip: str | None = None
) -> Answer:
    body = {"code": code} if client_ip is None else {"code": code, "client_ip": client_ip}
    return api.request("POST", f"/v1/users/{h.external_id}/backup-codes/verify", token, body)


def test_both_processes_are_ready_on_the_same_database_and_broker(pair: Pair) -> None:
    for api in (pair.a, pair.b):
        got = api.request("GET", "/readyz")
        assert got.status == 200, (got.body, api.tail())
    assert pair.a.proc.pid != pair.b.proc.pid


@pytest.mark.parametrize("first", ["a", "b"])
def test_failures_alternating_between_processes_throttle_the_source_on_both(
    pair: Pair, first: str
) -> None:
    h = holder(pair.services)
    token = _service_token(pair, h)
    order = [pair.a, pair.b] if first == "a" else [pair.b, pair.a]
    for n in range(5):
        got = _verify(order[n % 2], token, h, WRONG)
        assert got.status == 200, (got.body, order[n % 2].tail())
        assert got.body == {"accepted": False, "mistyped": False, "remaining": 5, "low": False}
    sixth = _verify(order[1], token, h, WRONG)  # the process that did not see the 5th
    assert sixth.status == 429, sixth.body
    assert sixth.body["type"] == "/problems/too-many-attempts"
    assert 0 < int(sixth.headers["retry-after"]) <= pair.settings.lockout_window_seconds
    for api in (pair.a, pair.b):
        right = _verify(api, token, h, h.codes[0])
        assert right.status == 429, (api.name, right.body)
        assert int(right.headers["retry-after"]) > 0
    assert row_of(pair.services, h.user_id, h.codes[0]).spent_at is None
    assert events(pair.services, h.org_id, EventType.LOCKOUT_STARTED) == []  # a source only
    assert len(events(pair.services, h.org_id, EventType.CODE_REJECTED)) == 5
    # the user's own visitor address, on either process, is not throttled
    for i, api in enumerate((pair.a, pair.b)):
        mine = _verify(api, token, h, h.codes[i], client_ip="203.0.113.44")
        assert mine.status == 200 and mine.body["accepted"] is True, mine.body


def test_a_right_code_on_one_process_clears_failures_counted_by_the_other(pair: Pair) -> None:
    h = holder(pair.services)
    token = _service_token(pair, h)
    for n in range(4):
        assert _verify((pair.a, pair.b)[n % 2], token, h, WRONG).status == 200
    ok = _verify(pair.a, token, h, h.codes[1])
    assert ok.status == 200
    assert ok.body == {"accepted": True, "mistyped": False, "remaining": 4, "low": False}
    # Counting starts again: four more failures, on either process, do not lock.
    for n in range(4):
        got = _verify((pair.b, pair.a)[n % 2], token, h, WRONG)
        assert got.status == 200, got.body
    assert _verify(pair.b, token, h, h.codes[2]).body["accepted"] is True


def test_concurrent_failures_on_both_processes_get_exactly_five_verdicts(pair: Pair) -> None:
    h = holder(pair.services)
    token = _service_token(pair, h)
    statuses: list[int] = []
    lock = threading.Lock()
    go = threading.Barrier(12)

    def attempt(api: ApiProcess) -> None:
        go.wait()
        got = _verify(api, token, h, WRONG)
        with lock:
            statuses.append(got.status)

    threads = [threading.Thread(target=attempt, args=((pair.a, pair.b)[i % 2],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200] * 5 + [429] * 7
    for api in (pair.a, pair.b):
        assert _verify(api, token, h, h.codes[0]).status == 429


def test_failed_authentications_are_counted_across_both_processes(pair: Pair) -> None:
    """30 bad tokens a minute per source, wherever they land; then 429 on both."""
    for attempt in range(3):  # a run that straddles a one-minute window is repeated
        window = time.time() // throttles.WINDOW_SECONDS
        source = {"X-Forwarded-For": f"192.0.2.{attempt + 1}"}
        answers = [
            (pair.a, pair.b)[n % 2].request("GET", "/v1/me/mfa", f"mfa_bad{n}", extra=source)
            for n in range(throttles.AUTH_FAILURES_PER_MINUTE)
        ]
        last = [
            api.request("GET", "/v1/me/mfa", "mfa_bad", extra=source) for api in (pair.a, pair.b)
        ]
        if time.time() // throttles.WINDOW_SECONDS == window:
            break
    assert [a.status for a in answers] == [401] * throttles.AUTH_FAILURES_PER_MINUTE
    assert [a.status for a in last] == [429, 429], [a.body for a in last]
    assert all(int(a.headers["retry-after"]) > 0 for a in last)


def test_a_revocation_holds_on_both_processes_from_the_next_request(pair: Pair) -> None:
    h = holder(pair.services)
    token = _service_token(pair, h)
    with pair.services.unit_of_work() as uow:
        row = tokens.authenticate(uow.session, token)
        assert row is not None
        token_id = row.id
    assert [api.request("GET", "/readyz").status for api in (pair.a, pair.b)] == [200, 200]
    assert _verify(pair.a, token, h, WRONG).status == 200
    with pair.services.unit_of_work() as uow:
        tokens.revoke(uow, token_id, audit.CLI)
    for api in (pair.a, pair.b):
        got = _verify(api, token, h, WRONG)
        assert got.status == 401, (api.name, got.body)
        assert got.headers["www-authenticate"] == "Bearer"


def test_the_hourly_budget_across_sources_is_shared_by_both_processes(pair: Pair) -> None:
    h = holder(pair.services)
    token = _service_token(pair, h)
    for n in range(20):  # 4 from each of 5 sources, alternating processes
        got = _verify((pair.a, pair.b)[n % 2], token, h, WRONG, client_ip=f"192.0.2.{n % 5 + 1}")
        assert got.status == 200, got.body
    for api in (pair.a, pair.b):
        fresh = _verify(api, token, h, h.codes[0], client_ip="198.51.100.99")
        assert fresh.status == 429, (api.name, fresh.body)
        assert fresh.body["type"] == "/problems/too-many-attempts"
        assert 0 < int(fresh.headers["retry-after"]) <= 3600
    assert len(events(pair.services, h.org_id, EventType.LOCKOUT_STARTED)) == 1
