"""The link to PostgreSQL fails mid-run, under the API and a worker at work.

The app and its worker reach PostgreSQL through a TCP proxy; the test cuts it
(new connections refused, live ones reset, open transactions rolled back by the
server) while regenerations are in flight, then restores it. Meanwhile the API
answers problem documents quickly and /readyz names the database; afterwards
every request completes and each user holds exactly one whole set of codes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from falcon import testing
from sqlalchemy import select
from sqlalchemy.engine import make_url

from domain.models import Regeneration
from tests.faults.stack import (
    Stack,
    assert_chain_ok,
    assert_one_active_set,
    assert_sheet_is_active_set,
    await_statuses,
    codes_by_user,
    seed_members,
    soak,
    statuses,
    succeeded_once,
)
from tests.faults.tcp_proxy import TcpProxy
from tests.support.api_world import ApiWorld, api_world
from tests.support.builders import Person
from tests.support.polling import await_true
from workers.app import TASK_REPUBLISH_STALE

IN_FLIGHT = soak(6, 60)
CODE_COUNT = 5
OUTAGE_SECONDS = 4.0
ANSWER_BOUND = 5.0  # seconds for any answer while the database is away
REGENERATIONS = "/v1/me/backup-codes/regenerations"
PROBLEM = "application/problem+json"

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


@contextmanager
def _world_behind_proxy(
    stack: Stack, database_url: str, *, worker: bool
) -> Iterator[tuple[ApiWorld, TcpProxy]]:
    url = make_url(database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host=proxy.listen_host, port=proxy.port)
        settings = stack.settings_with(
            MFA_DATABASE_URL=proxied.render_as_string(hide_password=False)
        )
        with api_world(settings, worker=worker) as world:
            yield world, proxy


def _timed(
    world: ApiWorld, method: str, path: str, token: str | None = None, json: object = None
) -> testing.Result:
    started = time.monotonic()
    got = world.call(method, path, token, json=json)
    took = time.monotonic() - started
    assert took < ANSWER_BOUND, f"{method} {path} took {took:.1f}s with the database away"
    return got


def _post(world: ApiWorld, token: str, member: Person) -> str:
    got = world.call("POST", REGENERATIONS, token, {"totp": member.code()})
    assert got.status_code == 202, got.text
    return str(got.json["id"])


@pytest.mark.timeout(120)
def test_a_database_outage_mid_run_leaves_every_user_one_whole_set(
    stack: Stack, pg_database_url: str
) -> None:
    # Real argon2 cost: a task spends ~150 ms inside its transaction, so the cut
    # finds transactions open.
    stack.use(MFA_ARGON2_MEMORY_KIB=str(19 * 1024), MFA_ARGON2_TIME_COST="2")
    with _world_behind_proxy(stack, pg_database_url, worker=True) as (world, proxy):
        svc = world.services
        org_id, members = seed_members(svc, IN_FLIGHT + 1, code_count=CODE_COUNT)
        tokens = {m.external_id: world.token(org_id, m.external_id, "user") for m in members}
        ids = [_post(world, tokens[m.external_id], m) for m in members[:IN_FLIGHT]]
        # Cut once the first is done: the others are queued or inside a transaction.
        await_true(lambda: "ready" in statuses(svc, ids).values(), 30, "a first regeneration")
        before = Counter(statuses(svc, ids).values())
        proxy.cut()
        assert before["ready"] < IN_FLIGHT, "nothing left in flight to cut"
        print(f"at the cut: {dict(before)}, {proxy.connections_made} connections so far")

        assert _timed(world, "GET", "/healthz").status_code == 200
        ready = _timed(world, "GET", "/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"] == {"database": "unavailable", "broker": "ok"}
        # The outage lasts a few seconds, long enough for the worker's first retries
        # to fail too; the API is probed all along.
        probes = 0
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:
            for method, path, body in (
                ("GET", "/v1/me/mfa", None),
                ("POST", REGENERATIONS, {"totp": members[-1].code()}),
                ("GET", f"{REGENERATIONS}/{ids[0]}", None),
            ):
                got = _timed(world, method, path, tokens[members[-1].external_id], json=body)
                # "Come back later", not "we broke": 503 unavailable, and nothing
                # about the database beyond that.
                assert got.status_code == 503, got.text
                assert got.headers["content-type"].startswith(PROBLEM)
                assert got.json["type"] == "/problems/unavailable"
                assert int(got.headers["retry-after"]) >= 1
                assert "postgres" not in got.text.lower() and "sql" not in got.text.lower()
                probes += 1
            time.sleep(0.2)
        assert probes >= 3

        proxy.restore()
        await_true(lambda: world.call("GET", "/readyz").status_code == 200, 15, "/readyz 200")
        late = members[-1]
        ids.append(_post(world, tokens[late.external_id], late))
        # The tasks retry on their own (1, 2, 4, 8 s); the beat's sweep, sent here
        # every few seconds, republishes whatever gave up meanwhile.
        republish = lambda: world.publisher.publish(TASK_REPUBLISH_STALE, {})  # noqa: E731
        final = await_statuses(svc, ids, timeout=60, poke=republish)
        assert set(final.values()) == {"ready"}, final

        succeeded_once(svc, org_id, ids)
        with svc.unit_of_work() as uow:
            regs = {
                r.user_id: r
                for r in uow.session.execute(
                    select(Regeneration).where(Regeneration.id.in_(ids))
                ).scalars()
            }
        codes = codes_by_user(svc, org_id)
        for m in members:
            rows = codes[m.external_id]
            reg = regs[rows[0].user_id]
            # Exactly one set, never half of a rotation nor a set from a rolled-back run.
            assert len(rows) == CODE_COUNT
            assert_one_active_set(rows, CODE_COUNT, reg.set_id or "")
            sheet = world.sheet_text(tokens[m.external_id], reg.id)
            assert_sheet_is_active_set(svc, sheet, rows, hash_all=False)
        assert_chain_ok(svc, org_id)
