"""The outbox: a row written in the same transaction as the change that needs a
task published, so a lost or failed publish is repaired later, never lost.

`enqueue` also puts the row (id, task, args) in the unit of work's outbox; once
it commits, the publisher (an after-commit hook) sends exactly those rows and
marks them published, while `pending` finds what such a publish missed.
Args hold ids and JSON primitives only, never a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.clock import utcnow
from domain.models import OutboxMessage
from domain.uow import QueuedTask, UnitOfWork

TASK_PROCESS_REGENERATION = "regeneration.process"  # args {"regeneration_id": str}
# Mails and webhook deliveries run on a queue of their own (`<prefix>.deliveries`), so a
# slow receiver holds a delivery worker, never a regeneration.
DELIVERIES_QUEUE = "deliveries"
TASK_DELIVER_WEBHOOK = "webhook.deliver"  # args {"delivery_id": int}
TASK_SEND_MAIL = "mail.send"  # args {"mail_id": str}
DELIVERY_TASKS = frozenset({TASK_DELIVER_WEBHOOK, TASK_SEND_MAIL})


def enqueue(uow: UnitOfWork, task: str, args: dict[str, Any]) -> OutboxMessage:
    message = OutboxMessage(task=task, args=dict(args), created_at=utcnow())
    uow.session.add(message)
    uow.session.flush()  # the id, for the after-commit publisher
    uow.outbox.append(QueuedTask(message.id, task, dict(args)))
    return message


def pending(session: Session, older_than: datetime | None, limit: int = 100) -> list[OutboxMessage]:
    """Unpublished rows, oldest first; only those created before `older_than` when
    given (so a sweep leaves alone what the after-commit hook is publishing now)."""
    query = select(OutboxMessage).where(OutboxMessage.published_at.is_(None))
    if older_than is not None:
        query = query.where(OutboxMessage.created_at < older_than)
    return list(session.execute(query.order_by(OutboxMessage.id).limit(limit)).scalars())


def mark_published(session: Session, ids: list[int], now: datetime) -> None:
    if not ids:
        return
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.published_at.is_(None))
        .values(published_at=now)
        .execution_options(synchronize_session=False)
    )
