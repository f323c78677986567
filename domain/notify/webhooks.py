"""Webhook deliveries as a projection of the audit stream.

`project_event` runs inside audit.append: for every enabled webhook of the
organization whose patterns match, a delivery row is inserted and its id queued
through the outbox, all in the event's transaction (a rollback takes them too; a
webhook created later never hears of it). An organization whose chain head
counts no webhook (AuditHead.webhooks, read with the head's lock, which webhook
create and delete hold too) is not looked up at all. Checkpoints and pings queue
their deliveries the same way, without an audit event of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from domain import outbox
from domain.clock import utcnow
from domain.models import AuditCheckpoint, AuditEvent, Regeneration, Webhook, WebhookDelivery
from domain.notify import webhook_rules
from domain.notify.webhook_rules import Outgoing
from domain.uow import UnitOfWork


def _listening(uow: UnitOfWork, org_id: str) -> list[Webhook]:
    return list(
        uow.session.execute(
            select(Webhook)
            .where(Webhook.org_id == org_id, Webhook.enabled.is_(True))
            .order_by(Webhook.created_at, Webhook.id)
        ).scalars()
    )


def queue(
    uow: UnitOfWork,
    webhook: Webhook,
    out: Outgoing,
    now: datetime,
    event: AuditEvent | None = None,
) -> WebhookDelivery:
    """Insert one delivery, due now, and queue its id for after the commit."""
    delivery = WebhookDelivery(
        webhook_id=webhook.id,
        message_id=out.message_id,
        event_id=event.id if event is not None else None,
        event_seq=event.seq if event is not None else None,
        type=out.type,
        payload=out.body,
        attempts=0,
        next_attempt_at=now,
        dispatched_at=now,
        created_at=now,
    )
    uow.session.add(delivery)
    uow.session.flush()
    enqueue_delivery(uow, delivery.id)
    return delivery


def enqueue_delivery(uow: UnitOfWork, delivery_id: int) -> None:
    """Publish the delivery's id once the transaction commits (the outbox)."""
    outbox.enqueue(uow, outbox.TASK_DELIVER_WEBHOOK, {"delivery_id": delivery_id})


def _fan_out(
    uow: UnitOfWork, hooks: Sequence[Webhook], outs: Sequence[Outgoing], event: AuditEvent | None
) -> None:
    now = utcnow()
    for webhook in hooks:
        for out in outs:
            if webhook_rules.listens_to(webhook.events, out.type):
                queue(uow, webhook, out, now, event)


def project_event(uow: UnitOfWork, event: AuditEvent) -> None:
    """The deliveries `event` causes (called by domain.notify.project)."""
    outs_without_lookup = webhook_rules.outgoing(event)
    if not outs_without_lookup:
        return
    hooks = _listening(uow, event.org_id)
    if not hooks:
        return
    outs = outs_without_lookup
    if event.type == "backup_codes.regeneration.succeeded":
        regeneration_id = (event.details or {}).get("regeneration_id")
        reg = uow.session.get(Regeneration, regeneration_id) if regeneration_id else None
        outs = webhook_rules.outgoing(event, regeneration_reason=reg.reason if reg else None)
    _fan_out(uow, hooks, outs, event)


def project_checkpoint(uow: UnitOfWork, checkpoint: AuditCheckpoint) -> None:
    """The `audit.checkpoint` webhook, from the checkpoint's own transaction."""
    hooks = _listening(uow, checkpoint.org_id)
    if hooks:
        out = webhook_rules.checkpoint(
            checkpoint.org_id,
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.signature,
            checkpoint.key_id,
            checkpoint.signed_at,
        )
        _fan_out(uow, hooks, [out], None)
