"""The unit of work: commit, roll back, a refusal committed explicitly, and what it
hands to the after-commit hooks (events, outbox, steps) following savepoints."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import event, select

from domain import accounts, audit, outbox
from domain.audit.types import EventType, Outcome
from domain.errors import BackupCodesDisabled, DomainError
from domain.models import AuditEvent
from domain.uow import Committed, QueuedTask, UnitOfWork
from infra.services import Services
from tests.support.builders import unique


def _org(svc: Services) -> str:
    org_id = unique()
    with svc.unit_of_work() as uow:
        accounts.create_org(uow, org_id, audit.CLI)
    return org_id


def _refusals(svc: Services, org_id: str) -> int:
    with svc.unit_of_work() as uow:
        return len(
            uow.session.execute(
                select(AuditEvent).where(
                    AuditEvent.org_id == org_id, AuditEvent.type == EventType.REGENERATION_REFUSED
                )
            ).all()
        )


def _append_refusal(uow: UnitOfWork, org_id: str) -> None:
    audit.append(
        uow,
        org_id,
        EventType.REGENERATION_REFUSED,
        Outcome.DENIED,
        audit.SYSTEM,
        details={"reason": "backup-codes-disabled"},
    )


def test_a_committed_refusal_keeps_what_was_written_and_still_raises(svc: Services) -> None:
    org_id = _org(svc)
    error = BackupCodesDisabled()
    with pytest.raises(BackupCodesDisabled) as info, svc.unit_of_work() as uow:
        _append_refusal(uow, org_id)
        raise uow.commit_refusal(error)
    assert info.value is error
    assert _refusals(svc, org_id) == 1


def test_an_uncommitted_domain_error_rolls_back(svc: Services) -> None:
    org_id = _org(svc)
    with pytest.raises(BackupCodesDisabled), svc.unit_of_work() as uow:
        _append_refusal(uow, org_id)
        raise BackupCodesDisabled()
    assert _refusals(svc, org_id) == 0


def test_any_other_exception_rolls_back(svc: Services) -> None:
    org_id = _org(svc)
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        _append_refusal(uow, org_id)
        raise RuntimeError("boom")
    assert _refusals(svc, org_id) == 0


def test_the_error_class_carries_no_commit_flag() -> None:
    assert not hasattr(BackupCodesDisabled(), "committed")
    assert not hasattr(DomainError, "commit_before_raising")


# --- what the unit of work hands over after commit ---------------------------------


@pytest.fixture
def committed(svc: Services) -> Iterator[list[Committed]]:
    """Every Committed record the after-commit hooks receive during the test."""
    seen: list[Committed] = []
    svc.after_commit.append(seen.append)
    yield seen
    svc.after_commit.remove(seen.append)


def test_the_hooks_get_the_events_and_outbox_once_at_the_outer_commit(
    svc: Services, committed: list[Committed]
) -> None:
    org_id = _org(svc)
    committed.clear()
    with svc.unit_of_work() as uow:
        _append_refusal(uow, org_id)
        with uow.savepoint():
            row = outbox.enqueue(uow, "regeneration.process", {"regeneration_id": "kept"})
        assert committed == []  # a released savepoint commits nothing
    assert [(e.type, e.outcome) for e in committed[0].events] == [
        (EventType.REGENERATION_REFUSED, Outcome.DENIED)
    ]
    assert committed[0].outbox == (
        QueuedTask(row.id, "regeneration.process", {"regeneration_id": "kept"}),
    )
    assert len(committed) == 1


def test_a_rolled_back_savepoint_drops_what_it_added_and_a_rollback_hands_over_nothing(
    svc: Services, committed: list[Committed]
) -> None:
    org_id = _org(svc)
    committed.clear()
    ran: list[str] = []
    with svc.unit_of_work() as uow:
        uow.call_after_commit(lambda: ran.append("outer"))
        with pytest.raises(RuntimeError), uow.savepoint():
            _append_refusal(uow, org_id)
            outbox.enqueue(uow, "regeneration.process", {"regeneration_id": "lost"})
            uow.call_after_commit(lambda: ran.append("lost"))
            raise RuntimeError("roll the savepoint back")
    assert (committed, ran) == ([], ["outer"])  # nothing produced: no hook runs
    assert _refusals(svc, org_id) == 0
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        _append_refusal(uow, org_id)
        uow.call_after_commit(lambda: ran.append("rolled back"))
        raise RuntimeError("roll everything back")
    assert (committed, ran) == ([], ["outer"])


def test_a_committed_refusal_hands_over_its_events_and_later_work_rolls_back_alone(
    svc: Services, committed: list[Committed]
) -> None:
    org_id = _org(svc)
    committed.clear()
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        _append_refusal(uow, org_id)
        uow.commit_refusal(BackupCodesDisabled())
        assert len(committed) == 1 and len(committed[0].events) == 1
        _append_refusal(uow, org_id)
        raise RuntimeError("after the refusal")
    assert _refusals(svc, org_id) == 1 and len(committed) == 1


def test_a_refusal_cannot_be_committed_inside_a_savepoint(svc: Services) -> None:
    with svc.unit_of_work() as uow, pytest.raises(RuntimeError), uow.savepoint():
        uow.commit_refusal(BackupCodesDisabled())


def _reads(svc: Services, step: Callable[[], object]) -> int:
    """The statements `step` sends to the database."""
    sent: list[str] = []

    def count(*args: object) -> None:
        sent.append(str(args[2]))

    event.listen(svc.engine, "before_cursor_execute", count)
    try:
        step()
    finally:
        event.remove(svc.engine, "before_cursor_execute", count)
    return len(sent)


def test_user_locks_follow_savepoints(svc: Services) -> None:
    org_id = _org(svc)
    with svc.unit_of_work() as uow:
        accounts.create_user(uow, org_id, "alice", None, audit.CLI)
        accounts.create_user(uow, org_id, "bob", None, audit.CLI)
    with svc.unit_of_work() as uow:
        alice = accounts.get_user(uow.session, org_id, "alice")
        assert _reads(svc, lambda: uow.lock_user(alice)) == 1
        assert _reads(svc, lambda: uow.lock_user(alice)) == 0  # held: no second read
        with uow.savepoint():
            bob = accounts.get_locked_user(uow, org_id, "bob")
        # Taken in a released savepoint: the transaction holds it.
        assert _reads(svc, lambda: uow.lock_user(bob)) == 0
        with pytest.raises(RuntimeError), uow.savepoint():
            assert _reads(svc, lambda: uow.lock_user(alice)) == 0  # the outer lock holds
            raise RuntimeError("roll back")
        assert _reads(svc, lambda: uow.lock_user(alice)) == 0
    with svc.unit_of_work() as uow:
        alice = accounts.get_user(uow.session, org_id, "alice")
        with pytest.raises(RuntimeError), uow.savepoint():
            uow.lock_user(alice)
            raise RuntimeError("roll back")
        # Released with its savepoint: taken again, by a fresh read.
        assert _reads(svc, lambda: uow.lock_user(alice)) == 1


def test_a_failing_hook_neither_undoes_nor_fails_a_committed_transaction(
    svc: Services, committed: list[Committed], caplog: pytest.LogCaptureFixture
) -> None:
    """After the commit nothing may raise: the change is durable, so the caller must
    not see a failure (a 500, a task retry), and the other hooks and steps still run."""

    def broken(done: Committed) -> None:
        raise RuntimeError("a publisher that cannot start its thread")

    svc.after_commit.insert(0, broken)
    steps: list[str] = []
    try:
        org_id = _org(svc)
        with svc.unit_of_work() as uow:
            _append_refusal(uow, org_id)
            uow.call_after_commit(lambda: steps.append("ran"))
    finally:
        svc.after_commit.remove(broken)
    assert _refusals(svc, org_id) == 1
    assert committed and steps == ["ran"]
    assert any("after-commit" in r.getMessage() for r in caplog.records)
