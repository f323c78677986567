"""A real Celery worker (a thread of this process, never eager) on real brokers.

Most tests share one worker on PostgreSQL and RabbitMQ, with a database of its
own so that the maintenance sweeps see only this module's rows. The API side is a
separate Services with the Publisher installed, as in the API process. Then one
end-to-end run each on the embedded broker (SQLite + filesystem://) and on Redis.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from sqlalchemy import func, select, update

from domain.audit.types import EventType
from domain.audit.verify import verify_chain
from domain.codes import LOCATOR_LENGTH, normalise
from domain.models import (
    AuditCheckpoint,
    AuditEvent,
    AuthFailure,
    BackupCode,
    OutboxMessage,
    Regeneration,
    Sheet,
)
from infra.db import utcnow
from infra.migrate import upgrade
from infra.services import Services
from infra.settings import Settings
from tests.integration import pipeline_helpers as h
from tests.integration.codes_fixtures import sheet_codes
from tests.support import records
from tests.support.broker import delete_broker_queues
from tests.support.builders import Person, new_org
from tests.support.postgres import fresh_postgres_database
from tests.support.settings import make_settings
from workers.app import (
    TASK_CHECKPOINT,
    TASK_EXPIRE_SHEETS,
    TASK_PROCESS,
    TASK_PURGE,
    TASK_REPUBLISH_STALE,
)
from workers.publish import Publisher
from workers.runtime import WorkerRuntime, build_worker, make_publisher

DEADLINE = 20.0
SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()


# --- plumbing -----------------------------------------------------------------------


class Finished:
    """Outcomes of the tasks the worker ran (Celery's task_postrun, in its thread)."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[str, Any]] = {}
        self._cond = threading.Condition()

    def __call__(self, task_id: str, retval: Any = None, state: str = "", **_: Any) -> None:
        with self._cond:
            self._done[task_id] = (state, retval)
            self._cond.notify_all()

    def wait(self, task_id: str) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: task_id in self._done, DEADLINE):
                raise AssertionError(f"task {task_id} did not run within {DEADLINE} s")
            state, retval = self._done[task_id]
        assert state == "SUCCESS", (state, retval)
        return retval


def await_status(svc: Services, regeneration_id: str, wanted: str = "ready") -> Regeneration:
    end = time.monotonic() + DEADLINE
    while True:
        reg = records.load_regeneration(svc, regeneration_id)
        if reg.status == wanted:
            return reg
        assert reg.status in ("queued", "processing"), (reg.status, reg.failure)
        if time.monotonic() > end:
            raise AssertionError(f"{regeneration_id} still {reg.status} after {DEADLINE} s")
        time.sleep(0.02)


delete_queues = delete_broker_queues


@dataclass
class Stack:
    api: Services  # the API's side: requests, with the publisher installed
    publisher: Publisher
    runtime: WorkerRuntime  # the worker's side: its own Services and Celery app
    finished: Finished

    def run(self, task: str, **kwargs: Any) -> Any:
        """Send a task through the broker and wait for the worker's answer."""
        return self.finished.wait(self.publisher.publish(task, kwargs))


@contextmanager
def running(
    settings: Settings,
    pool: str = "solo",
    concurrency: int = 1,
    cleanup: Callable[[Celery], None] | None = None,
) -> Iterator[Stack]:
    runtime = build_worker(settings)
    # AMQP heartbeats put a timer in the worker's event loop, which then polls for up
    # to 10 s before it sees the stop flag of a worker thread (a process gets a signal).
    runtime.celery.conf.broker_heartbeat = 0
    # Remote control is not under test, and would leave a reply queue per test worker.
    runtime.celery.conf.worker_enable_remote_control = False
    api = Services.build(settings)
    publisher = make_publisher(api)
    finished = Finished()
    signals.task_postrun.connect(finished, weak=False)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)  # the worker's log setup changes them
    try:
        with start_worker(
            runtime.celery,
            pool=pool,
            concurrency=concurrency,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=15,
        ):
            yield Stack(api, publisher, runtime, finished)
    finally:
        signals.task_postrun.disconnect(finished)
        root.setLevel(level)
        root.handlers[:] = handlers
        publisher.uninstall()
        publisher.app.close()
        if cleanup is not None:
            cleanup(runtime.celery)
        api.close()
        runtime.close()


def enrolled_and_ready(stack: Stack) -> tuple[Person, str]:
    person, enrollment_id = h.enrolled(stack.api, at=utcnow())
    assert enrollment_id is not None
    await_status(stack.api, enrollment_id)
    return person, enrollment_id


def request(stack: Stack, person: Person) -> str:
    """A regeneration with the next time step's code (the enrollment used this one)."""
    now = utcnow()
    return h.request(stack.api, person, now, code=person.code(now, 1)).regeneration.id


def active_codes(svc: Services, person: Person) -> list[BackupCode]:
    with svc.unit_of_work() as uow:
        user = h.user(uow.session, person.org_id, person.external_id)
        query = select(BackupCode).where(
            BackupCode.user_id == user.id, BackupCode.deactivated_at.is_(None)
        )
        return list(uow.session.execute(query).scalars())


# --- PostgreSQL + RabbitMQ ----------------------------------------------------------------


@pytest.fixture(scope="module")
def private_database() -> Iterator[str]:
    """A migrated database of this module's own: the sweeps' counts are then exact."""
    with fresh_postgres_database("mfa_worker") as url:
        yield url


@pytest.fixture(scope="module")
def pg_amqp_settings(
    tmp_path_factory: pytest.TempPathFactory, private_database: str, amqp_url: str
) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("worker"),
        MFA_DATABASE_URL=private_database,
        MFA_BROKER_URL=amqp_url,
        MFA_AUDIT_SIGNING_KEY=SIGNING_KEY,  # not embedded: no key file is made
    )


@pytest.fixture(scope="class")
def stack(pg_amqp_settings: Settings) -> Iterator[Stack]:
    with running(pg_amqp_settings, cleanup=delete_queues) as running_stack:
        yield running_stack


@pytest.mark.postgres
@pytest.mark.rabbitmq
class TestOnPostgresAndRabbitMQ:
    def test_a_requested_regeneration_is_processed_and_its_sheet_holds_the_active_codes(
        self, stack: Stack
    ) -> None:
        person, enrollment_id = enrolled_and_ready(stack)
        first = sheet_codes(stack.api, enrollment_id)
        regeneration_id = request(stack, person)

        reg = await_status(stack.api, regeneration_id)
        assert reg.totp_ciphertext is None and reg.failure is None
        codes = sheet_codes(stack.api, regeneration_id)
        active = active_codes(stack.api, person)
        assert len(codes) == len(active) == reg.code_count == 5
        assert {row.set_id for row in active} == {reg.set_id}
        by_locator = {row.locator: row for row in active}
        for code in codes:
            value = normalise(code)
            assert value is not None
            assert stack.api.hasher.verify(by_locator[value[:LOCATOR_LENGTH]].hash, value)
        # The enrollment's codes are no longer among them.
        assert not set(first) & set(codes)
        for code in first:
            value = normalise(code)
            assert value is not None
            row = by_locator.get(value[:LOCATOR_LENGTH])
            assert row is None or not stack.api.hasher.verify(row.hash, value)

    def test_a_redelivered_message_for_a_finished_request_changes_nothing(
        self, stack: Stack
    ) -> None:
        person, regeneration_id = enrolled_and_ready(stack)

        def snapshot() -> tuple[Any, ...]:
            with stack.api.unit_of_work() as uow:
                reg = uow.session.get(Regeneration, regeneration_id)
                sheet = uow.session.get(Sheet, regeneration_id)
                assert reg is not None and sheet is not None
                events = uow.session.execute(
                    select(func.count()).where(AuditEvent.org_id == person.org_id)
                ).scalar_one()
                return (
                    reg.status,
                    reg.completed_at,
                    reg.set_id,
                    sheet.text_ciphertext,
                    sorted(row.id for row in active_codes(stack.api, person)),
                    events,
                )

        before = snapshot()
        assert stack.run(TASK_PROCESS, regeneration_id=regeneration_id) == "ready"
        assert snapshot() == before

    def test_republish_stale_sends_a_pending_outbox_row_and_the_request_completes(
        self, stack: Stack
    ) -> None:
        person, _ = enrolled_and_ready(stack)
        stack.publisher.uninstall()  # as if the publish after commit had failed
        try:
            regeneration_id = request(stack, person)
        finally:
            stack.publisher.install()
        with stack.api.unit_of_work() as uow:
            # Older than the grace the sweep leaves to the after-commit publisher.
            uow.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))
                .values(created_at=utcnow() - timedelta(minutes=1))
            )
        assert records.load_regeneration(stack.api, regeneration_id).status == "queued"

        assert stack.run(TASK_REPUBLISH_STALE) == {
            "outbox": 1,
            "stale": 0,
            "deliveries": 0,
            "mails": 0,
        }
        await_status(stack.api, regeneration_id)
        with stack.api.unit_of_work() as uow:
            pending = uow.session.execute(
                select(func.count()).where(OutboxMessage.published_at.is_(None))
            ).scalar_one()
        assert pending == 0

    def test_republish_stale_resends_a_request_whose_message_was_lost(self, stack: Stack) -> None:
        person, _ = enrolled_and_ready(stack)
        stack.publisher.uninstall()
        try:
            regeneration_id = request(stack, person)
        finally:
            stack.publisher.install()
        stale = stack.api.settings.stale_after_seconds + 5
        with stack.api.unit_of_work() as uow:
            # Published, then lost (a broker restart, a killed embedded worker).
            uow.session.execute(update(OutboxMessage).values(published_at=utcnow()))
            uow.session.execute(
                update(Regeneration)
                .where(Regeneration.id == regeneration_id)
                .values(dispatched_at=utcnow() - timedelta(seconds=stale))
            )

        assert stack.run(TASK_REPUBLISH_STALE) == {
            "outbox": 0,
            "stale": 1,
            "deliveries": 0,
            "mails": 0,
        }
        reg = await_status(stack.api, regeneration_id)
        assert reg.dispatch_count == 2
        assert stack.run(TASK_REPUBLISH_STALE) == {
            "outbox": 0,
            "stale": 0,
            "deliveries": 0,
            "mails": 0,
        }

    def test_expire_sheets_purges_a_sheet_nobody_fetched_in_time(self, stack: Stack) -> None:
        person, regeneration_id = enrolled_and_ready(stack)
        past = utcnow() - timedelta(seconds=1)
        with stack.api.unit_of_work() as uow:
            uow.session.execute(
                update(Regeneration)
                .where(Regeneration.id == regeneration_id)
                .values(expires_at=past)
            )
            uow.session.execute(
                update(Sheet)
                .where(Sheet.regeneration_id == regeneration_id)
                .values(expires_at=past)
            )

        assert stack.run(TASK_EXPIRE_SHEETS) == 1
        assert records.load_regeneration(stack.api, regeneration_id).status == "expired"
        assert h.stored_sheet(stack.api, regeneration_id) is None
        assert len(records.events(stack.api, person.org_id, EventType.SHEET_EXPIRED)) == 1
        assert stack.run(TASK_EXPIRE_SHEETS) == 0

    def test_checkpoint_signs_every_chain_head_that_moved(self, stack: Stack) -> None:
        org_id = new_org(stack.api)
        signed = stack.run(TASK_CHECKPOINT)
        assert signed >= 1
        with stack.api.unit_of_work() as uow:
            mine = uow.session.execute(
                select(AuditCheckpoint).where(AuditCheckpoint.org_id == org_id)
            ).scalars()
            assert len(list(mine)) == 1
        assert stack.run(TASK_CHECKPOINT) == 0

    def test_a_message_without_a_usable_id_is_dropped(self, stack: Stack) -> None:
        assert stack.run(TASK_PROCESS, regeneration_id=12345) == "invalid"
        assert stack.run(TASK_PROCESS, regeneration_id=str(uuid.uuid4())) == "missing"

    def test_purge_deletes_what_outlived_its_retention_and_then_finds_nothing(
        self, stack: Stack
    ) -> None:
        person, enrollment_id = enrolled_and_ready(stack)
        h.retrieve(stack.api, person, enrollment_id, "text", utcnow())
        await_status(stack.api, request(stack, person))  # a newer set: the enrollment's is old
        long_ago = utcnow() - timedelta(days=400)
        with stack.api.unit_of_work() as uow:
            uow.session.execute(
                update(Regeneration)
                .where(Regeneration.id == enrollment_id)
                .values(created_at=long_ago, completed_at=long_ago)
            )
            published = uow.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.published_at.is_not(None))
                .values(published_at=long_ago)
            ).rowcount
            user_id = h.user(uow.session, person.org_id).id
            uow.session.add_all(
                AuthFailure(user_id=user_id, kind="totp", occurred_at=at)
                for at in (long_ago, utcnow())
            )
            events_before = uow.session.execute(select(func.count(AuditEvent.id))).scalar_one()
        assert published >= 2  # this test's two requests, and the class's earlier ones

        counts = stack.run(TASK_PURGE)
        assert counts == {
            "outbox": published,
            "regenerations": 1,
            "auth_failures": 1,
            "mails": 0,
            "repudiation_tickets": 0,
            "ui_tickets": 0,
            "batches": 6,
        }
        assert h.load_or_none(stack.api, enrollment_id) is None
        with stack.api.unit_of_work() as uow:
            assert (
                uow.session.execute(select(func.count(AuditEvent.id))).scalar_one() == events_before
            )
            left = uow.session.execute(
                select(func.count(AuthFailure.id)).where(AuthFailure.user_id == user_id)
            ).scalar_one()
            assert left == 1
            assert verify_chain(uow.session, person.org_id, stack.api.settings).ok
        again = stack.run(TASK_PURGE)
        assert again == {
            "outbox": 0,
            "regenerations": 0,
            "auth_failures": 0,
            "mails": 0,
            "repudiation_tickets": 0,
            "ui_tickets": 0,
            "batches": 6,
        }


# --- the embedded broker, and Redis --------------------------------------------------------


def test_the_embedded_default_runs_the_pipeline_end_to_end(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # SQLite + filesystem://, as `mfa-codes run`
    assert settings.is_sqlite and settings.embedded_broker
    upgrade(settings.database_url)
    # The pool `mfa-codes worker` picks there.
    with running(settings, pool="threads", concurrency=2) as embedded:
        person, _ = enrolled_and_ready(embedded)
        regeneration_id = request(embedded, person)
        await_status(embedded.api, regeneration_id)
        assert len(sheet_codes(embedded.api, regeneration_id)) == 5
        assert embedded.publisher.ping() is True


def test_an_undecodable_message_file_does_not_stop_the_embedded_worker(settings: Settings) -> None:
    """kombu's own folder transport raised on an empty file (its publish shows the file
    before writing it) and Celery stopped the worker: "Unrecoverable error"."""
    with running(settings, pool="threads", concurrency=2) as embedded:
        queue_dir = settings.broker_folder / "queue"
        regeneration_queue = f"{settings.queue_prefix}.regeneration"
        # Sorted ahead of everything the API will publish, so the worker meets it first.
        (queue_dir / f"0000000000000_torn.{regeneration_queue}.msg").write_bytes(b"")
        person, _ = enrolled_and_ready(embedded)
        regeneration_id = request(embedded, person)
        await_status(embedded.api, regeneration_id)
        quarantined = os.listdir(settings.broker_folder / "quarantine")
        assert quarantined == [f"0000000000000_torn.{regeneration_queue}.msg"]


@pytest.mark.redis
def test_redis_as_the_broker_runs_the_pipeline_end_to_end(tmp_path: Path, redis_url: str) -> None:
    import redis

    settings = make_settings(tmp_path, MFA_BROKER_URL=redis_url)
    upgrade(settings.database_url)

    def forget_queues(_: Celery) -> None:
        client = redis.Redis.from_url(redis_url)
        prefix = settings.queue_prefix
        patterns = (
            f"{prefix}.*",
            f"_kombu.binding.{prefix}.*",
            f"_kombu.binding_permanent.{prefix}.*",
        )
        keys = [key for pattern in patterns for key in client.scan_iter(pattern)]
        if keys:
            client.delete(*keys)
        client.close()

    with running(settings, cleanup=forget_queues) as on_redis:
        person, _ = enrolled_and_ready(on_redis)
        regeneration_id = request(on_redis, person)
        await_status(on_redis.api, regeneration_id)
        assert len(sheet_codes(on_redis.api, regeneration_id)) == 5
        assert on_redis.publisher.ping() is True
