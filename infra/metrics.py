"""Business metrics, counted from the audit events a transaction commits.

Every state change the service makes is an audit event, so counting committed
events gives regenerations by outcome, lockouts and expired sheets without a
second bookkeeping path that could drift. Events of a rolled-back transaction
are not counted: the unit of work hands them over only on its outermost commit.
With PROMETHEUS_MULTIPROC_DIR set (gunicorn with several workers),
prometheus_client aggregates across processes.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

from domain.audit.types import EventType
from domain.models import RegenerationStatus
from domain.uow import Committed

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
MAILS = Counter(
    "mfa_mails",
    "Mail attempts to users, by outcome (sent; retry: failed, tried again; failed: given up)",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "mfa_webhook_delivery_attempts",
    "Webhook delivery attempts, by what came of them (succeeded, retry, dead, disabled, stale)",
    ["outcome"],
)
WEBHOOKS_DISABLED = Counter(
    "mfa_webhooks_disabled", "Webhooks disabled because their receiver answered 410 Gone"
)
QUEUE_LATENCY = Histogram(
    "mfa_regeneration_queue_latency_seconds",
    "From the request's acceptance to a worker starting it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)


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
    elif type_ == EventType.NOTIFICATION_SENT:
        MAILS.labels("sent").inc()
    elif type_ == EventType.NOTIFICATION_FAILED:
        MAILS.labels("failed" if details.get("final") else "retry").inc()
    elif type_ == EventType.WEBHOOK_DISABLED:
        WEBHOOKS_DISABLED.inc()


def count_committed(done: Committed) -> None:
    """The after-commit hook (infra.services): count the events a transaction committed."""
    for event in done.events:
        _count(event.type, event.outcome, event.details)


def registry() -> CollectorRegistry:
    """What a scrape should read: with PROMETHEUS_MULTIPROC_DIR (prometheus_client's
    own variable) every process's samples added up, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
        return summed
    return REGISTRY
