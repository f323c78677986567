"""Mails as a projection of the audit stream: the rows an event causes, inserted in
its transaction, their ids published through the outbox once it commits.

A row holds the recipient's address (personal data, kept out of the audit trail)
and what to say (the event's id and the mail's kind); what it says is composed
when it is sent (domain.notify.mail_delivery), from the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select

from domain import outbox, sql
from domain.models import AuditEvent, MailDelivery, MailStatus, Organization, User, new_id
from domain.notify.mail_rules import (
    MailKind,
    RecipientKind,
    kind_of,
    recipients,
    should_send,
)
from domain.uow import UnitOfWork

TASK_SEND_MAIL = outbox.TASK_SEND_MAIL  # the one name, with the other delivery tasks

# A new mail is sent by the task its outbox row publishes; the sweep leaves it alone
# this long, so that it never sends one the after-commit publisher is sending.
FIRST_ATTEMPT_GRACE = timedelta(seconds=60)
REPUBLISH_WAIT = timedelta(minutes=5)


def project(uow: UnitOfWork, event: AuditEvent) -> None:
    """The mails `event` causes, to each of its user's addresses."""
    kind = kind_of(event.type)
    if kind is None or event.user_id is None:
        return
    found = _user_and_org(uow, event)
    if found is None:
        return
    if not should_send(kind, found.notify_users is not False):
        return
    for recipient_kind, address in recipients(found.email, found.recovery_email):
        _insert(uow, event, found.user_id, kind, recipient_kind, address)


def address_changed(uow: UnitOfWork, event: AuditEvent, field: str, old_address: str) -> None:
    """Tell the old address that it is no longer the user's `field`."""
    if field not in set(RecipientKind) or not old_address or event.user_id is None:
        return
    found = _user_and_org(uow, event)
    if found is None:
        return
    if not should_send(MailKind.ADDRESS_CHANGED, found.notify_users is not False):
        return
    _insert(uow, event, found.user_id, MailKind.ADDRESS_CHANGED, RecipientKind(field), old_address)


@dataclass(frozen=True)
class _Addressee:
    user_id: str
    email: str | None
    recovery_email: str | None
    notify_users: bool | None  # the organization's setting


_ADDRESSEE = (
    select(User.id, User.email, User.recovery_email, Organization.notify_users)
    .join(Organization, Organization.id == User.org_id)
    .where(User.org_id == bindparam("org_id"), User.external_id == bindparam("external_id"))
)


def _user_and_org(uow: UnitOfWork, event: AuditEvent) -> _Addressee | None:
    """What the mails need of the event's user and organization, in one read of plain
    columns (this runs inside sign-in's transaction, where every round trip and ORM
    load counts). What the caller left pending was flushed with the event's append."""
    found = sql.run(
        uow.session.connection(),
        _ADDRESSEE,
        {"org_id": event.org_id, "external_id": event.user_id},
    ).one_or_none()
    return None if found is None else _Addressee(*found)


def _insert(
    uow: UnitOfWork,
    event: AuditEvent,
    user_id: str,
    kind: MailKind,
    recipient_kind: RecipientKind,
    address: str,
) -> None:
    now = event.occurred_at
    row = MailDelivery(
        id=new_id(),  # known now: no flush before the outbox row names it
        event_id=event.id,
        org_id=event.org_id,
        user_id=user_id,
        recipient=address,
        recipient_kind=recipient_kind,
        kind=kind,
        status=MailStatus.PENDING,
        attempts=0,
        next_attempt_at=now + FIRST_ATTEMPT_GRACE,
        created_at=now,
    )
    uow.session.add(row)
    outbox.enqueue(uow, TASK_SEND_MAIL, {"mail_id": row.id})


def due(uow: UnitOfWork, now: datetime, limit: int = 100) -> list[str]:
    """Pending mails whose next attempt is due (a retry, or one whose publish or
    worker was lost), oldest first, for the sweep to publish again; each is put off
    by REPUBLISH_WAIT, so a worker that is down does not get it every sweep."""
    rows = list(
        uow.session.execute(
            select(MailDelivery)
            .where(MailDelivery.status == MailStatus.PENDING, MailDelivery.next_attempt_at <= now)
            .order_by(MailDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for row in rows:
        row.next_attempt_at = now + REPUBLISH_WAIT
    uow.session.flush()
    return [row.id for row in rows]
