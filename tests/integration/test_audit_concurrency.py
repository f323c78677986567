"""Concurrent appends from several OS processes make one gapless chain (PostgreSQL)."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from domain import accounts, audit
from domain.audit.types import EventType, Outcome
from domain.audit.verify import verify_chain
from domain.models import AuditEvent
from infra.db import make_engine, make_session_factory, unit_of_work
from infra.services import Services
from tests.support.builders import unique

PROCESSES = 4
PER_PROCESS = 50


def _append_many(url: str, org: str, worker: int, start: object) -> None:
    """Child process: its own engine, one transaction per event, like API requests."""
    start.wait(30)  # type: ignore[attr-defined]
    engine = make_engine(url, pool_size=1, max_overflow=0)
    sessions = make_session_factory(engine)
    try:
        for i in range(PER_PROCESS):
            with unit_of_work(sessions) as uow:
                audit.append(
                    uow,
                    org,
                    EventType.AUDIT_READ,
                    Outcome.SUCCESS,
                    audit.Context(principal_id=f"worker-{worker}", role="auditor"),
                    details={"worker": worker, "i": i},
                )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_processes_appending_to_one_org_make_one_gapless_chain(
    pg_services: Services, pg_database_url: str
) -> None:
    org = unique("conc")
    with pg_services.unit_of_work() as uow:
        accounts.create_org(uow, org, audit.CLI)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_append_many, args=(pg_database_url, org, w, start))
        for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    total = 1 + PROCESSES * PER_PROCESS
    with pg_services.unit_of_work() as uow:
        seqs = (
            uow.session.execute(
                select(AuditEvent.seq).where(AuditEvent.org_id == org).order_by(AuditEvent.seq)
            )
            .scalars()
            .all()
        )
        workers = (
            uow.session.execute(
                select(AuditEvent.actor_principal_id).where(
                    AuditEvent.org_id == org, AuditEvent.type == EventType.AUDIT_READ
                )
            )
            .scalars()
            .all()
        )
        result = verify_chain(uow.session, org, pg_services.settings)
    assert seqs == list(range(1, total + 1))
    assert sorted(set(workers)) == [f"worker-{w}" for w in range(PROCESSES)]
    assert result.ok and result.events_checked == total, result.reason


def test_an_open_append_in_one_org_does_not_hold_up_another(pg_services: Services) -> None:
    busy, free = unique("busy"), unique("free")
    with pg_services.unit_of_work() as uow:
        accounts.create_org(uow, busy, audit.CLI)
        accounts.create_org(uow, free, audit.CLI)
    with pg_services.unit_of_work() as holder:
        audit.append(holder, busy, EventType.AUDIT_READ, Outcome.SUCCESS, audit.CLI)  # head locked
        with pg_services.unit_of_work() as other:
            other.session.execute(text("SET LOCAL lock_timeout = '2s'"))
            event = audit.append(other, free, EventType.AUDIT_READ, Outcome.SUCCESS, audit.CLI)
            assert event.seq == 2
        with pg_services.unit_of_work() as blocked:
            blocked.session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                audit.append(
                    blocked,
                    busy,
                    EventType.AUDIT_READ,
                    Outcome.SUCCESS,
                    audit.CLI,
                    at=datetime.now(UTC),
                )
