"""The link between the app and RabbitMQ fails; intake keeps answering, nothing is lost.

The app publishes through a TCP proxy the test cuts and restores; the worker
process connects to RabbitMQ directly (the machine's RabbitMQ is never stopped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select

from domain.models import OutboxMessage, Regeneration
from infra.services import Services
from tests.faults.stack import (
    Stack,
    assert_one_active_set,
    await_statuses,
    codes_by_user,
    seed_members,
    soak,
    statuses,
    submit,
    succeeded_once,
)
from tests.faults.tcp_proxy import TcpProxy
from tests.support.api_world import ApiWorld, api_world
from tests.support.builders import Person
from tests.support.polling import await_true

DURING = soak(10, 200)  # requests taken while the link is down
INTAKE_BOUND = 5.0  # seconds, for each request while the link is cut
REGENERATIONS = "/v1/me/backup-codes/regenerations"

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


def _post(world: ApiWorld, token: str, member: Person) -> tuple[str, float]:
    started = time.monotonic()
    got = world.call("POST", REGENERATIONS, token, {"totp": member.code()})
    took = time.monotonic() - started
    assert got.status_code == 202, got.text
    return str(got.json["id"]), took


def _outbox(svc: Services, ids: Sequence[str]) -> dict[str, OutboxMessage]:
    """The outbox row of each regeneration (the database is shared: filter by id)."""
    wanted = set(ids)
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars()
        return {
            str(r.args.get("regeneration_id")): r
            for r in rows
            if r.args.get("regeneration_id") in wanted
        }


def _ready(world: ApiWorld) -> tuple[int, dict[str, Any]]:
    got = world.call("GET", "/readyz")
    return got.status_code, dict(got.json)


@pytest.mark.timeout(90)
def test_intake_answers_while_the_broker_link_is_cut_and_nothing_is_lost(
    stack: Stack, amqp_url: str
) -> None:
    with TcpProxy.in_front_of(amqp_url, 5672) as proxy:
        app_settings = stack.settings_with(MFA_BROKER_URL=proxy.url_for(amqp_url))
        with api_world(app_settings, worker=False) as world:
            svc = world.services
            org_id, members = seed_members(svc, DURING + 2, code_count=3)
            tokens = {m.external_id: world.token(org_id, m.external_id, "user") for m in members}
            stack.worker()  # straight to RabbitMQ

            # Before: the app's publishing connection through the proxy is live.
            first, _ = _post(world, tokens[members[0].external_id], members[0])
            await_statuses(svc, [first], timeout=30)
            assert proxy.live >= 1

            proxy.cut()
            started = time.monotonic()
            status, body = _ready(world)
            assert status == 503
            assert body["checks"] == {"database": "ok", "broker": "unavailable"}
            assert time.monotonic() - started < INTAKE_BOUND

            during = []
            for m in members[1 : DURING + 1]:
                rid, took = _post(world, tokens[m.external_id], m)
                assert took < INTAKE_BOUND, f"intake took {took:.1f}s with the broker cut"
                during.append(rid)
            # Nothing lost: each request is on record, queued, its outbox row pending.
            rows = _outbox(svc, during)
            assert sorted(rows) == sorted(during)
            assert all(r.published_at is None for r in rows.values())
            assert set(statuses(svc, during).values()) == {"queued"}

            proxy.restore()
            await_true(lambda: _ready(world)[0] == 200, 15, "/readyz to answer 200 again")
            # A request taken now goes out at once, over a fresh connection.
            last_member = members[DURING + 1]
            last, took = _post(world, tokens[last_member.external_id], last_member)
            assert _outbox(svc, [last])[last].published_at is not None
            # The beat's sweep sends what waited (here called directly, not after 10 s).
            assert world.publisher.flush_pending(None) >= DURING
            assert all(r.published_at is not None for r in _outbox(svc, during).values())

            everything = [first, *during, last]
            final = await_statuses(svc, everything, timeout=60)
            assert set(final.values()) == {"ready"}
            succeeded_once(svc, org_id, everything)
            codes = codes_by_user(svc, org_id)
            with svc.unit_of_work() as uow:
                set_ids = {
                    r.user_id: r.set_id
                    for r in uow.session.execute(
                        select(Regeneration).where(Regeneration.id.in_(everything))
                    ).scalars()
                }
            for rows_of_user in codes.values():
                assert len(rows_of_user) == 3
                assert_one_active_set(rows_of_user, 3, set_ids[rows_of_user[0].user_id] or "")


@pytest.mark.timeout(60)
def test_intake_is_bounded_when_the_broker_link_goes_silent(stack: Stack, amqp_url: str) -> None:
    """A partition that drops packets instead of refusing them (a firewall, a frozen
    broker host): the established connection hangs rather than fails."""
    bound = 8.0  # the confirm wait, one reconnect (2 s connect timeout) and its retry
    with TcpProxy.in_front_of(amqp_url, 5672) as proxy:
        app_settings = stack.settings_with(MFA_BROKER_URL=proxy.url_for(amqp_url))
        with api_world(app_settings, worker=False) as world:
            svc = world.services
            org_id, members = seed_members(svc, 2, code_count=1)
            submit(svc, members[:1])  # opens the publishing connection
            assert proxy.live >= 1
            token = world.token(org_id, members[1].external_id, "user")

            proxy.pause()
            answers: list[tuple[str, float]] = []
            intake = threading.Thread(
                target=lambda: answers.append(_post(world, token, members[1])), daemon=True
            )
            intake.start()
            intake.join(bound)
            answered = not intake.is_alive()
            proxy.resume()  # let a stuck request finish before the world closes
            intake.join(30)
            assert answered, f"intake still waiting after {bound:.0f}s of a silent broker link"
            assert answers and answers[0][1] < bound
