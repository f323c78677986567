"""The outbox against SQLite and PostgreSQL: enqueue in the transaction, find, mark."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from domain import outbox
from domain.models import OutboxMessage
from infra.db import utcnow
from infra.services import Services


def _enqueue(svc: Services, n: int) -> list[int]:
    with svc.unit_of_work() as uow:
        for i in range(n):
            outbox.enqueue(uow, outbox.TASK_PROCESS_REGENERATION, {"regeneration_id": f"r{i}"})
        return [queued.id for queued in uow.outbox]


def test_enqueue_notes_each_row_id_for_the_after_commit_publisher(svc: Services) -> None:
    ids = _enqueue(svc, 3)
    assert len(ids) == 3 and len(set(ids)) == 3
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(select(OutboxMessage).where(OutboxMessage.id.in_(ids))).scalars()
        by_id = {r.id: r for r in rows}
    assert [by_id[i].args for i in ids] == [{"regeneration_id": f"r{i}"} for i in range(3)]
    assert all(by_id[i].published_at is None for i in ids)


def test_a_rolled_back_enqueue_leaves_no_row(svc: Services) -> None:
    noted: list[int] = []
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        noted.append(outbox.enqueue(uow, "regeneration.process", {"regeneration_id": "x"}).id)
        raise RuntimeError("rolled back")
    with svc.unit_of_work() as uow:
        assert uow.session.get(OutboxMessage, noted[0]) is None


def test_pending_lists_unpublished_rows_until_they_are_marked(svc: Services) -> None:
    ids = _enqueue(svc, 2)
    later = utcnow() + timedelta(seconds=5)
    with svc.unit_of_work() as uow:
        assert set(ids) <= {m.id for m in outbox.pending(uow.session, later, limit=10_000)}
        assert not set(ids) & {
            m.id for m in outbox.pending(uow.session, utcnow() - timedelta(hours=1))
        }
        outbox.mark_published(uow.session, ids[:1], later)
        outbox.mark_published(uow.session, [], later)  # nothing to do
    with svc.unit_of_work() as uow:
        waiting = {m.id for m in outbox.pending(uow.session, None, limit=10_000)}
        assert ids[0] not in waiting and ids[1] in waiting
        first = uow.session.get(OutboxMessage, ids[0])
        assert first is not None and first.published_at == later


def test_marking_twice_keeps_the_first_publication_time(svc: Services) -> None:
    ids = _enqueue(svc, 1)
    first, second = utcnow(), utcnow() + timedelta(minutes=1)
    with svc.unit_of_work() as uow:
        outbox.mark_published(uow.session, ids, first)
    with svc.unit_of_work() as uow:
        outbox.mark_published(uow.session, ids, second)
    with svc.unit_of_work() as uow:
        row = uow.session.get(OutboxMessage, ids[0])
        assert row is not None and row.published_at == first
