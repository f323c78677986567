"""Webhook deliveries with real worker processes on PostgreSQL and RabbitMQ, laid out
as `mfa-codes run` lays them out: a worker for regenerations and maintenance, and a
delivery worker of its own (threads) on the deliveries queue.

A delivery worker SIGKILLed while a receiver holds its request loses nothing: the
delivery is attempted again once its lease passes (the sweep, as the beat would run
it) and ends `succeeded`. A receiver that never answers delays neither another
webhook's delivery nor a regeneration: both are measured while it hangs.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from domain import admin, audit
from domain.clock import utcnow
from domain.models import WebhookDelivery
from domain.notify import webhook_admin
from domain.notify.webhook_addresses import AllowPrivate
from tests.faults.stack import Stack, WorkerProcess, seed_members
from tests.support.api_world import ApiWorld, api_world
from tests.support.polling import await_true
from tests.support.processes import child_env
from tests.support.receiver import Reply, receiver
from workers.deliveries import republish_due

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


def start_worker(stack: Stack, name: str, *args: str) -> WorkerProcess:
    argv = [str(Path(sys.executable).with_name("mfa-codes")), "worker", *args]
    argv.append(f"--hostname={name}-{uuid.uuid4().hex[:6]}@%h")
    log = stack.tmp_path / f"{name}-{uuid.uuid4().hex[:4]}.log"
    worker = WorkerProcess(argv, child_env(**stack.env()), stack.tmp_path, log).start()
    stack.workers.append(worker)
    return worker


def delivery_worker(stack: Stack) -> WorkerProcess:
    return start_worker(stack, "deliveries", "-Q", "deliveries", "-P", "threads", "-c", "4")


@pytest.fixture
def world(stack: Stack) -> Iterator[ApiWorld]:
    stack.use(MFA_WEBHOOK_ALLOW_PRIVATE="loopback", MFA_WEBHOOK_RETRY_SCHEDULE="1,1,1")
    with api_world(stack.settings, worker=False) as built:
        yield built


def hook(world: ApiWorld, org_id: str, url: str) -> str:
    with world.services.unit_of_work() as uow:
        made, _ = webhook_admin.create(
            uow,
            world.services.box,
            org_id,
            url,
            ["*"],
            "",
            AllowPrivate.LOOPBACK,
            audit.CLI,
            utcnow(),
        )
        return made.id


def rows(world: ApiWorld, webhook_id: str) -> list[WebhookDelivery]:
    with world.services.unit_of_work() as uow:
        found = list(
            uow.session.execute(
                select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
            ).scalars()
        )
        uow.session.expunge_all()
        return found


@pytest.mark.timeout(150)
def test_a_delivery_worker_killed_mid_delivery_loses_nothing(stack: Stack, world: ApiWorld) -> None:
    svc = world.services
    with receiver(Reply(hang=True), Reply(200)) as rx:
        org_id = world.org()
        hook_id = hook(world, org_id, rx.url)
        worker = delivery_worker(stack)
        with svc.unit_of_work() as uow:
            admin.put_policy(uow, org_id, True, 6, audit.CLI)  # published after commit
        await_true(lambda: rx.requests() or None, 30, "the receiver to hold the request")
        worker.kill()  # SIGKILL, while the receiver still holds the request
        delivery_worker(stack)

        def done() -> bool | None:
            republish_due(svc, world.publisher)  # the beat's sweep
            (row,) = rows(world, hook_id)
            return True if row.status == "succeeded" else None

        await_true(done, 90, "the delivery to be done again", every=1.0)
        (row,) = rows(world, hook_id)
        assert row.attempts == 2
        first, second = rx.requests()
        assert first.headers["webhook-id"] == second.headers["webhook-id"]


@pytest.mark.timeout(150)
def test_a_receiver_that_never_answers_delays_no_other_webhook_nor_a_regeneration(
    stack: Stack, world: ApiWorld
) -> None:
    svc = world.services
    org_id, members = seed_members(svc, 1)
    person = members[0]
    start_worker(
        stack, "main", "-Q", "regeneration", "-Q", "maintenance", "-P", "prefork", "-c", "1"
    )
    delivery_worker(stack)
    with receiver(Reply(hang=True)) as slow, receiver(Reply(200)) as quick:
        hook(world, org_id, slow.url)
        hook(world, org_id, quick.url)
        started = time.monotonic()
        with svc.unit_of_work() as uow:
            admin.put_policy(uow, org_id, True, 5, audit.CLI)
        await_true(lambda: slow.requests() or None, 30, "the slow receiver to be called")
        await_true(lambda: quick.requests() or None, 30, "the quick receiver to be called")
        quick_latency = quick.requests()[0].at - started
        # While the slow receiver still holds its request, a regeneration runs through.
        token = world.token(org_id, person.external_id, "user")
        asked = time.monotonic()
        got = world.call(
            "POST", "/v1/me/backup-codes/regenerations", token, {"totp": person.code()}
        )
        assert got.status_code == 202, got.text
        world.await_status(token, got.json["id"], timeout=30)
        regeneration_took = time.monotonic() - asked
        hanging_for = time.monotonic() - slow.requests()[0].at
        print(
            f"quick receiver after {quick_latency:.2f} s; a regeneration took "
            f"{regeneration_took:.2f} s, while the slow receiver had hung for {hanging_for:.2f} s"
        )
        # Both well inside the 10 s the slow receiver holds its delivery for.
        assert quick_latency < 5
        assert regeneration_took < 8
        # The slow receiver got the policy change first (and then the new codes' event).
        assert b'"policy.changed"' in slow.requests()[0].body
