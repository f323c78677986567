"""The composition root: everything a use case needs, built once from Settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain.codes import CodeHasher
from domain.crypto import SecretBox
from domain.limits import Limits
from domain.slots import VerificationSlots
from domain.uow import AfterCommit, UnitOfWork
from infra import metrics
from infra.db import make_engine, make_session_factory, unit_of_work
from infra.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    hasher: CodeHasher
    limits: Limits
    slots: VerificationSlots
    # Run after every outermost commit with what it produced, in order: the metrics
    # count its events here; a Publisher, once installed, publishes its outbox.
    after_commit: list[AfterCommit] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, engine: Engine | None = None) -> Services:
        engine = engine or make_engine(settings.database_url)
        sessions = make_session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            box=SecretBox(settings.secret_keys),
            hasher=CodeHasher(
                memory_kib=settings.argon2.memory_kib,
                time_cost=settings.argon2.time_cost,
                parallelism=settings.argon2.parallelism,
            ),
            limits=Limits(
                threshold=settings.lockout_threshold,
                window_seconds=settings.lockout_window_seconds,
                user_threshold=settings.lockout_user_threshold,
                user_window_seconds=settings.lockout_user_window_seconds,
                consecutive_cap=settings.lockout_consecutive_cap,
                mistyped_threshold=settings.mistyped_threshold,
                mistyped_window_seconds=settings.mistyped_window_seconds,
            ),
            slots=VerificationSlots(settings.verify_slots, settings.verify_slot_wait_ms / 1000),
            after_commit=[metrics.count_committed],
        )

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """One transaction (infra.db.unit_of_work) with this root's after-commit hooks."""
        with unit_of_work(self.sessions, self.after_commit) as uow:
            yield uow

    def close(self) -> None:
        self.engine.dispose()
