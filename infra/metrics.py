"""Business metrics, counted from the audit events a transaction commits.

Every state change the service makes is an audit event, so counting committed
events gives regenerations by outcome, lockouts and expired sheets without a
second bookkeeping path that could drift. Events of a rolled-back transaction
are not counted. With PROMETHEUS_MULTIPROC_DIR set (gunicorn with several
workers), prometheus_client aggregates across processes.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from domain.audit.types import EventType
from domain.models import RegenerationStatus

_PENDING = "metrics_pending_events"

AUDIT_EVENTS = Counter(
    "mfa_audit_events", "Audit events committed, by type and outcome", ["type", "outcome"]
)
REGENERATIONS = Counter(
    "mfa_regenerations",
    "Regenerations finished, by outcome (ready, or the failure reason)",
    ["outcome"],
)
LOCKOUTS = Counter("mfa_lockouts", "Users locked out after too many failed attempts")
SHEETS_EXPIRED = Counter("mfa_sheets_expired_unfetched", "Sheets purged before anyone fetched them")
CODES_VERIFIED = Counter(
    "mfa_backup_code_verifications", "Backup-code checks at sign-in, by result", ["result"]
)
QUEUE_LATENCY = Histogram(
    "mfa_regeneration_queue_latency_seconds",
    "From the request's acceptance to a worker starting it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)


def note_event(session: Session, type_: str, outcome: str, details: dict[str, Any]) -> None:
    """Called by audit.append: remembered, with the (sub)transaction that wrote it,
    until the outermost transaction commits."""
    writer = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append((writer, type_, outcome, details))


def _count(type_: str, outcome: str, details: dict[str, Any]) -> None:
    AUDIT_EVENTS.labels(type_, outcome).inc()
    if type_ == EventType.REGENERATION_STARTED and "queued_seconds" in details:
        QUEUE_LATENCY.observe(float(details["queued_seconds"]))
    elif type_ == EventType.REGENERATION_SUCCEEDED:
        REGENERATIONS.labels(RegenerationStatus.READY).inc()
    elif type_ == EventType.REGENERATION_FAILED:
        REGENERATIONS.labels(str(details.get("reason") or "unknown")).inc()
    elif type_ == EventType.LOCKOUT_STARTED:
        LOCKOUTS.inc()
    elif type_ == EventType.SHEET_EXPIRED:
        SHEETS_EXPIRED.inc()
    elif type_ == EventType.CODE_ACCEPTED:
        CODES_VERIFIED.labels("accepted").inc()
    elif type_ == EventType.CODE_REJECTED:
        CODES_VERIFIED.labels("rejected").inc()


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: its events wait for the outer commit
    for _writer, type_, outcome, details in session.info.pop(_PENDING, ()):
        _count(type_, outcome, details)


def _after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:
        session.info.pop(_PENDING, None)
        return
    # A savepoint rolled back: forget only what it (or a savepoint inside it) wrote.
    kept = [e for e in session.info.get(_PENDING, ()) if not _within(e[0], previous)]
    session.info[_PENDING] = kept


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def install(sessions: sessionmaker[Session]) -> None:
    if not event.contains(sessions, "after_commit", _after_commit):
        event.listen(sessions, "after_commit", _after_commit)
        event.listen(sessions, "after_soft_rollback", _after_soft_rollback)


def registry() -> CollectorRegistry:
    """What a scrape should read: with PROMETHEUS_MULTIPROC_DIR (prometheus_client's
    own variable) every process's samples added up, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
        return summed
    return REGISTRY
