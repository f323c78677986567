"""Projections of the audit stream: which event becomes which mail or webhook delivery.

audit.append calls `project` for every event it appends, in the same transaction,
so a delivery row exists exactly when its event does (a rollback takes both). The
rules are pure; the rows they insert are sent by the delivery workers after commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from domain.models import AuditCheckpoint, AuditEvent
    from domain.uow import UnitOfWork


def project(uow: UnitOfWork, event: AuditEvent, *, webhooks: int | None = None) -> None:
    """Insert the deliveries `event` causes: mails to its user (domain.notify.mail) and
    the organization's webhook deliveries (domain.notify.webhooks). `webhooks`: how
    many the organization has, as read with its chain head's lock (None: unknown).
    Imports stay inside: the projections use the audit module that calls this."""
    from domain.notify import mail
    from domain.notify import webhooks as hooks

    mail.project(uow, event)
    if webhooks != 0:
        hooks.project_event(uow, event)


def checkpoint_signed(uow: UnitOfWork, checkpoint: AuditCheckpoint) -> None:
    """A checkpoint is no audit event, but goes out as the `audit.checkpoint` webhook."""
    from domain.notify import webhooks

    webhooks.project_checkpoint(uow, checkpoint)


def address_changed(uow: UnitOfWork, event: AuditEvent, field: str, old_address: str) -> None:
    """Tell `old_address` that the user's `field` (email or recovery_email) changed.
    Called by the use case that changed it, beside its `user.upserted` event: the event
    names the field, never an address, so the old address comes from the caller."""
    from domain.notify import mail

    mail.address_changed(uow, event, field, old_address)
