"""Publishing after commit, against real RabbitMQ: a committed request reaches its
queue, a rolled-back one never does, and a broker that is down costs a delay only."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select

from domain import regeneration
from domain.models import OutboxMessage, Regeneration
from infra.db import utcnow
from infra.migrate import upgrade
from infra.services import Services
from infra.settings import Settings
from tests.integration import pipeline_helpers as h
from tests.support import records
from tests.support.builders import USER_CTX as CTX
from tests.support.polling import await_true
from tests.support.processes import free_port
from tests.support.settings import make_settings
from workers import publish
from workers.app import TASK_PROCESS, make_celery, regeneration_queue
from workers.publish import Publisher

pytestmark = pytest.mark.rabbitmq
SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def broker_settings(request: pytest.FixtureRequest, tmp_path: Path, amqp_url: str) -> Settings:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_database_url")
        return make_settings(
            tmp_path,
            MFA_DATABASE_URL=url,
            MFA_BROKER_URL=amqp_url,
            MFA_AUDIT_SIGNING_KEY=SIGNING_KEY,  # not embedded: no key file is made
        )
    settings = make_settings(tmp_path, MFA_BROKER_URL=amqp_url)
    upgrade(settings.database_url)
    return settings


@pytest.fixture
def svc(broker_settings: Settings) -> Iterator[Services]:
    built = Services.build(broker_settings)
    yield built
    built.close()


@pytest.fixture
def app(broker_settings: Settings) -> Iterator[Celery]:
    """The app, with this test's queues declared up front and deleted afterwards."""
    celery_app = make_celery(broker_settings)
    with celery_app.connection_for_write() as conn:
        for queue in celery_app.amqp.queues.values():
            queue.bind(conn.default_channel).declare()
    yield celery_app
    with celery_app.connection_for_write() as conn:
        for queue in celery_app.amqp.queues.values():
            bound = queue.bind(conn.default_channel)
            bound.delete()
            bound.exchange.delete()
    celery_app.close()


@pytest.fixture
def publisher(app: Celery, svc: Services) -> Iterator[Publisher]:
    pub = Publisher(app, svc)
    pub.install()
    yield pub
    pub.uninstall()


def queued(app: Celery, settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """(task name, kwargs) of every message waiting in the regeneration queue, taken."""
    taken = []
    with app.connection_for_read() as conn:
        queue = app.amqp.queues[regeneration_queue(settings)].bind(conn.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            _args, kwargs, _embed = message.decode()
            taken.append((message.headers["task"], kwargs))
    return taken


def outbox_rows(svc: Services, regeneration_ids: list[str]) -> list[OutboxMessage]:
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars()
        return [r for r in rows if r.args.get("regeneration_id") in regeneration_ids]


def test_a_commit_publishes_its_outbox_rows_after_the_commit_and_marks_them(
    svc: Services, app: Celery, publisher: Publisher
) -> None:
    settings = svc.settings
    person, enrollment_id = h.enrolled(svc, at=utcnow(), settle=False)
    assert enrollment_id is not None
    assert queued(app, settings) == [(TASK_PROCESS, {"regeneration_id": enrollment_id})]

    now = utcnow()
    records.process(svc, enrollment_id, now)  # one pending regeneration a user at a time
    with svc.unit_of_work() as uow:
        outcome = regeneration.request_regeneration(
            uow, svc, h.user(uow.session, person.org_id), person.code(now, 1), None, now, CTX
        )
        assert queued(app, settings) == []  # nothing leaves before the commit
    assert queued(app, settings) == [(TASK_PROCESS, {"regeneration_id": outcome.regeneration.id})]
    rows = outbox_rows(svc, [enrollment_id, outcome.regeneration.id])
    assert len(rows) == 2 and all(r.published_at is not None for r in rows)


def test_a_rollback_publishes_nothing_and_leaks_nothing_into_the_next_commit(
    svc: Services, app: Celery, publisher: Publisher
) -> None:
    settings = svc.settings
    person, enrollment_id = h.enrolled(svc, at=utcnow(), settle=False)
    assert queued(app, settings) == [(TASK_PROCESS, {"regeneration_id": enrollment_id})]

    now = utcnow()
    assert enrollment_id is not None
    records.process(svc, enrollment_id, now)  # one pending regeneration a user at a time
    rolled_back: list[str] = []
    with pytest.raises(RuntimeError, match="after the request"), svc.unit_of_work() as uow:
        outcome = regeneration.request_regeneration(
            uow, svc, h.user(uow.session, person.org_id), person.code(now, 1), None, now, CTX
        )
        rolled_back.append(outcome.regeneration.id)
        raise RuntimeError("something failed after the request")
    assert queued(app, settings) == []
    assert outbox_rows(svc, rolled_back) == []
    with svc.unit_of_work() as uow:
        assert uow.session.get(Regeneration, rolled_back[0]) is None

    # The same session factory's next commit publishes its own row, and only it.
    later = h.request(svc, person, now)
    assert queued(app, settings) == [(TASK_PROCESS, {"regeneration_id": later.regeneration.id})]


# SQLite only: flush_pending sends every pending row, and a database of its own makes
# that exactly this test's rows.
@pytest.mark.parametrize("broker_settings", ["sqlite"], indirect=True)
def test_a_broker_outage_leaves_the_row_pending_and_flush_pending_sends_it_later(
    svc: Services, app: Celery
) -> None:
    settings = svc.settings
    # no publisher yet: its outbox row stays pending
    person, enrollment_id = h.enrolled(svc, at=utcnow(), settle=False)
    assert enrollment_id is not None
    down = make_celery(
        settings.with_overrides(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    )
    records.process(svc, enrollment_id, utcnow())  # one pending regeneration a user at a time
    failing = Publisher(down, svc)
    assert failing.ping() is False
    failing.install()
    try:
        started = time.monotonic()
        outcome = h.request(svc, person, utcnow())  # commits although the publish fails
        assert time.monotonic() - started < 10
    finally:
        failing.uninstall()
    ids = [enrollment_id, outcome.regeneration.id]
    assert records.load_regeneration(svc, outcome.regeneration.id).status == "queued"
    assert [r.published_at for r in outbox_rows(svc, ids)] == [None, None]
    assert failing.flush_pending(None) == 0  # still down: nothing sent, nothing marked
    down.close()
    assert [r.published_at for r in outbox_rows(svc, ids)] == [None, None]
    assert queued(app, settings) == []

    working = Publisher(app, svc)
    assert working.ping() is True
    assert working.flush_pending(None) == 2
    assert queued(app, settings) == [(TASK_PROCESS, {"regeneration_id": i}) for i in ids]
    assert all(r.published_at is not None for r in outbox_rows(svc, ids))
    assert working.flush_pending(None) == 0  # marked: not sent twice


def test_batched_marks_reach_the_database_shortly_after_the_commit(
    svc: Services, app: Celery
) -> None:
    """The API's publisher marks sent rows from a background thread, many per UPDATE."""
    batched = Publisher(app, svc, batch_marks=True)
    batched.install()
    try:
        _, first = h.enrolled(svc, at=utcnow(), settle=False)
        assert first is not None
        await_true(
            lambda: outbox_rows(svc, [first])[0].published_at is not None,
            10,
            "the background thread to mark the row",
            every=0.02,
        )
    finally:
        batched.uninstall()
    assert [kw["regeneration_id"] for _, kw in queued(app, svc.settings)] == [first]


def test_marks_still_waiting_are_written_when_the_publisher_is_taken_down(
    svc: Services, app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "MARK_GATHER_SECONDS", 60.0)  # the thread waits a minute
    batched = Publisher(app, svc, batch_marks=True)
    batched.install()
    try:
        _, reg_id = h.enrolled(svc, at=utcnow(), settle=False)
        assert reg_id is not None
        assert outbox_rows(svc, [reg_id])[0].published_at is None  # sent, not yet marked
    finally:
        batched.uninstall()
    assert outbox_rows(svc, [reg_id])[0].published_at is not None
    assert [kw["regeneration_id"] for _, kw in queued(app, svc.settings)] == [reg_id]
