"""The unit of work: one transaction, and what it produced for after the commit.

Use cases write through `uow.session` and record in the unit of work what must
happen once the transaction is durable: the outbox rows to publish (`.outbox`),
the audit events to count (`.events`), any other after-commit step
(`call_after_commit`). The user row locks it holds are in it too (`lock_user`).
On the outermost commit it hands a `Committed` record to the hooks the
composition root gave it (publishing, metrics), then runs the steps; a rollback
discards them. A savepoint (`savepoint()`) keeps what it added when released and
drops it when rolled back, so nothing of a rolled-back savepoint is published,
counted or believed locked.

A refusal that must stay on record although the request fails (an audited
refusal, a counted failure) is committed explicitly: `raise uow.commit_refusal(e)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from domain import sql
from domain.errors import NotFound
from domain.models import User

log = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseException)


@dataclass(frozen=True)
class QueuedTask:
    """An outbox row of this transaction: the publisher sends it without reading it back."""

    id: int
    task: str
    args: dict[str, Any]


@dataclass(frozen=True)
class RecordedEvent:
    """An audit event appended in this transaction (for the business metrics)."""

    type: str
    outcome: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Committed:
    """What a committed transaction produced, for the after-commit hooks."""

    outbox: tuple[QueuedTask, ...]
    events: tuple[RecordedEvent, ...]


AfterCommit = Callable[[Committed], None]

# Built once: the lock of lock_user_row binds only the id.
_LOCK_ROW = select(User.id).where(User.id == bindparam("user_id")).with_for_update()


@dataclass
class _Mark:
    """Where a savepoint began in each list, and the locks it took."""

    outbox: int
    events: int
    steps: int
    locks: set[str] = field(default_factory=set)


class UnitOfWork:
    def __init__(self, session: Session, hooks: Sequence[AfterCommit] = ()) -> None:
        self.session = session
        self._hooks = tuple(hooks)
        self.outbox: list[QueuedTask] = []
        self.events: list[RecordedEvent] = []
        self._steps: list[Callable[[], None]] = []
        self._locks: set[str] = set()
        self._savepoints: list[_Mark] = []

    # --- what the transaction holds and produces -------------------------------------

    def lock_user(self, user: User) -> User:
        """Take the user's row lock (PostgreSQL; SQLite's writer lock already holds)
        so that spending, regenerating and counting failures never interleave. Once
        held, the row is fresh for the rest of the transaction: no second read.
        NotFound when the user was deleted meanwhile (the lock waited for that delete)."""
        if user.id in self._locks:
            return user
        locked = self.session.execute(
            select(User)
            .where(User.id == user.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if locked is None:
            raise NotFound("no such user")
        self.note_locked(locked.id)
        return locked

    def lock_user_row(self, user: User) -> None:
        """lock_user for a caller that needs no fresh copy of the row, only the
        user's identity (id, organization, external id, which never change): one
        Core statement built once, no ORM load (sign-in's hot path, where the load
        cost more than the round trip). NotFound as lock_user."""
        if user.id in self._locks:
            return
        if sql.run(self.session.connection(), _LOCK_ROW, {"user_id": user.id}).first() is None:
            raise NotFound("no such user")
        self.note_locked(user.id)

    def note_locked(self, user_id: str) -> None:
        """A user row the caller locked in its own read (SELECT ... FOR UPDATE)."""
        self._locks.add(user_id)
        if self._savepoints:
            self._savepoints[-1].locks.add(user_id)

    def call_after_commit(self, step: Callable[[], None]) -> None:
        """Run `step` once the outermost transaction has committed; never if rolled back."""
        self._steps.append(step)

    # --- nesting ---------------------------------------------------------------------

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A SAVEPOINT: released with the block, rolled back (and forgotten) if it raises."""
        mark = _Mark(len(self.outbox), len(self.events), len(self._steps))
        self._savepoints.append(mark)
        try:
            with self.session.begin_nested():
                yield
        except BaseException:
            self._savepoints.pop()
            del self.outbox[mark.outbox :]
            del self.events[mark.events :]
            del self._steps[mark.steps :]
            # A rolled-back savepoint releases the row locks taken inside it.
            self._locks -= mark.locks
            raise
        self._savepoints.pop()
        if self._savepoints:
            self._savepoints[-1].locks |= mark.locks

    # --- ending ----------------------------------------------------------------------

    def commit(self) -> None:
        """Commit, then hand what was produced (if anything) to the hooks, then run the steps."""
        if self._savepoints:
            raise RuntimeError("commit inside a savepoint")
        self.session.commit()
        done = Committed(tuple(self.outbox), tuple(self.events))
        steps = self._steps
        self._forget()
        # Nothing may raise from here on: the change is durable, and a failure now would
        # tell the caller it was not (a 500, a task retry). The outbox sweep republishes
        # what a failed publish left; a failed step is logged.
        if done.outbox or done.events:
            for hook in self._hooks:
                _safely(hook, done)
        for step in steps:
            _safely(step)

    def rollback(self) -> None:
        self.session.rollback()
        self._savepoints.clear()
        self._forget()

    def commit_refusal(self, error: E) -> E:
        """Commit what was written (the refusal's audit event, a counted failure) and
        return the error, for the caller to raise: `raise uow.commit_refusal(error)`."""
        self.commit()
        return error

    def _forget(self) -> None:
        self.outbox = []
        self.events = []
        self._steps = []
        self._locks = set()


def _safely(call: Callable[..., None], *args: object) -> None:
    """Run an after-commit hook or step; a failure is logged, never raised."""
    try:
        call(*args)
    except Exception:
        log.exception("an after-commit step failed (the transaction is committed)")


# What a batch job takes from its caller: a new unit of work, one per batch.
UnitOfWorkFactory = Callable[[], AbstractContextManager[UnitOfWork]]
