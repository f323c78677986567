"""The purge: delete rows nothing reads any more, so tables stop growing.

What goes, each after its retention (infra.settings):
- outbox rows already published (a pending row is never purged: it is work);
- regenerations finished (retrieved, expired, failed), with whatever sheet is left
  (none should be), except the one that issued a user's newest set: GET /v1/me/mfa
  reads it (`last_set_expired_unseen`). The retention outlasts the 24 h idempotency
  window, so a key is forgotten only long after it stopped answering anyway;
- failure counters older than the longest window that reads them;
- mails sent or given up, after the outbox's retention (they hold an address,
  personal data, and are read by nothing once done), and repudiation tickets
  expired that long ago;
- ui-link tickets once expired (used or not, a dead ticket tells nothing).

The audit trail is never touched: it is append-only, and its triggers refuse a
DELETE on PostgreSQL anyway. Each batch is one short transaction of at most
`batch` rows (ids selected first, rows held by others skipped), so a purge never
holds long locks; running it twice, or on two beats, only finds less to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, func, select
from sqlalchemy.orm import Session, aliased

from domain.models import (
    AuthFailure,
    BackupCode,
    MailDelivery,
    MailStatus,
    OutboxMessage,
    Regeneration,
    RegenerationStatus,
    RepudiationTicket,
    Sheet,
    UiTicket,
)
from domain.ports import Maintenance, RetentionSettings

BATCH = 1000  # rows a statement
MAX_BATCHES = 100  # per kind and run: a backlog is worked off over several runs
# Finished and without a sheet to fetch (a READY one still has its sheet).
PURGEABLE = (RegenerationStatus.RETRIEVED, RegenerationStatus.EXPIRED, RegenerationStatus.FAILED)

Purger = Callable[[Session, datetime, int], int]


def purge_published_outbox(session: Session, before: datetime, batch: int = BATCH) -> int:
    """Delete up to `batch` outbox rows published before `before`."""
    published = (OutboxMessage.published_at.is_not(None), OutboxMessage.published_at < before)
    return _delete_oldest(session, OutboxMessage, published, batch)


def _delete_oldest(
    session: Session,
    model: type[OutboxMessage] | type[AuthFailure],
    conditions: tuple[ColumnElement[bool], ...],
    batch: int,
) -> int:
    """Delete up to `batch` rows of `model` that meet `conditions`, lowest ids first,
    passing over rows another transaction holds."""
    ids = list(
        session.execute(
            select(model.id)
            .where(*conditions)
            .order_by(model.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if ids:
        session.execute(delete(model).where(model.id.in_(ids)))
    return len(ids)


def purge_finished_regenerations(session: Session, before: datetime, batch: int = BATCH) -> int:
    """Delete up to `batch` regenerations finished and created before `before`, with
    their sheets; the regeneration of each user's newest set is kept."""
    code, any_code = aliased(BackupCode), aliased(BackupCode)
    newest_generation = (
        select(func.max(any_code.generation))
        .where(any_code.user_id == Regeneration.user_id)
        .correlate(Regeneration)
        .scalar_subquery()
    )
    issued_newest_set = (
        exists()
        .where(
            code.user_id == Regeneration.user_id,
            code.set_id == Regeneration.set_id,
            code.generation == newest_generation,
        )
        .correlate(Regeneration)
    )
    ids = list(
        session.execute(
            select(Regeneration.id)
            .where(
                Regeneration.status.in_(PURGEABLE),
                Regeneration.created_at < before,
                Regeneration.completed_at.is_(None) | (Regeneration.completed_at < before),
                ~issued_newest_set,
            )
            .limit(batch)  # in no order: a sort would read every candidate each batch
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if ids:
        session.execute(delete(Sheet).where(Sheet.regeneration_id.in_(ids)))
        session.execute(delete(Regeneration).where(Regeneration.id.in_(ids)))
    return len(ids)


# --- failure rows -----------------------------------------------------------------------
# auth_failures rows feed only the sliding windows of domain.limits (per source, per
# user, mistyped inputs); the consecutive count and the locks live in attempt_limits,
# which is never purged. A row older than the longest window is read by nothing.


def auth_failure_cutoff(settings: RetentionSettings, now: datetime) -> datetime:
    """Failure rows older than this are read by no window of domain.limits."""
    keep = max(
        settings.auth_failure_retention_seconds,
        settings.lockout_window_seconds,
        settings.lockout_user_window_seconds,
        settings.mistyped_window_seconds,
    )
    return now - timedelta(seconds=keep)


def purge_auth_failures(session: Session, before: datetime, batch: int = BATCH) -> int:
    """Delete up to `batch` failure rows that occurred before `before` (age alone)."""
    return _delete_oldest(session, AuthFailure, (AuthFailure.occurred_at < before,), batch)


# --- mails -----------------------------------------------------------------------------


def purge_finished_mails(session: Session, before: datetime, batch: int = BATCH) -> int:
    """Delete up to `batch` mails sent or given up, created before `before` (a pending
    mail is work, never purged)."""
    ids = list(
        session.execute(
            select(MailDelivery.id)
            .where(MailDelivery.status != MailStatus.PENDING, MailDelivery.created_at < before)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if ids:
        session.execute(delete(MailDelivery).where(MailDelivery.id.in_(ids)))
    return len(ids)


def purge_expired_tickets(session: Session, before: datetime, batch: int = BATCH) -> int:
    """Delete up to `batch` repudiation tickets that expired before `before`."""
    return _purge_expired_by_hash(session, RepudiationTicket, before, batch)


def purge_expired_ui_tickets(session: Session, before: datetime, batch: int = BATCH) -> int:
    """Delete up to `batch` ui-link tickets that expired before `before`."""
    return _purge_expired_by_hash(session, UiTicket, before, batch)


def _purge_expired_by_hash(
    session: Session,
    model: type[RepudiationTicket] | type[UiTicket],
    before: datetime,
    batch: int,
) -> int:
    """Both kinds of ticket are keyed by their hash and carry expires_at."""
    hashes = list(
        session.execute(
            select(model.ticket_hash)
            .where(model.expires_at < before)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if hashes:
        session.execute(delete(model).where(model.ticket_hash.in_(hashes)))
    return len(hashes)


# --- the run ----------------------------------------------------------------------------


def purge(
    services: Maintenance, now: datetime, *, batch: int = BATCH, max_batches: int = MAX_BATCHES
) -> dict[str, int]:
    """One run: every kind in batches of its own transaction until a batch comes back
    short or `max_batches` ran. Rows deleted by kind, and the transactions used."""
    settings = services.settings
    steps: list[tuple[str, Purger, datetime]] = [
        (
            "outbox",
            purge_published_outbox,
            now - timedelta(seconds=settings.outbox_retention_seconds),
        ),
        (
            "regenerations",
            purge_finished_regenerations,
            now - timedelta(seconds=settings.regeneration_retention_seconds),
        ),
        ("auth_failures", purge_auth_failures, auth_failure_cutoff(settings, now)),
        (
            "mails",
            purge_finished_mails,
            now - timedelta(seconds=settings.outbox_retention_seconds),
        ),
        (
            "repudiation_tickets",
            purge_expired_tickets,
            now - timedelta(seconds=settings.outbox_retention_seconds),
        ),
        ("ui_tickets", purge_expired_ui_tickets, now),
    ]
    counts = {name: 0 for name, _, _ in steps}
    batches = 0
    for name, purge_batch, before in steps:
        for _ in range(max_batches):
            with services.unit_of_work() as uow:
                deleted = purge_batch(uow.session, before, batch)
            batches += 1
            counts[name] += deleted
            if deleted < batch:
                break
    counts["batches"] = batches
    return counts
