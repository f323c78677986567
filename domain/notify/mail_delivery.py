"""Sending one mail: claim it, compose it, and record what the transport answered.

The task (workers) runs three steps: `claim` in one transaction (it takes the
attempt, makes the repudiation ticket on the first one, and composes the
message), the transport outside any transaction, then `record_sent` or
`record_failure` in another. A claim holds the mail for LEASE: a worker killed
between the steps leaves it pending, and the sweep (domain.notify.mail.due)
publishes it again once the lease has passed; the message is composed again
with the same Message-ID and the same ticket, so a resent mail is recognisably
the same. Failures are retried
with a growing wait for a day, then the mail is `failed`. Each outcome is
audited (`notification.sent`, `notification.failed`): the kind, the event and
the attempt, never the address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import select

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.crypto import SecretBox
from domain.models import AuditEvent, MailDelivery, MailStatus, Organization, User
from domain.notify import repudiation
from domain.notify.mail_compose import MailFacts, compose, message_id
from domain.notify.mail_rules import MailKind, offers_repudiation
from domain.uow import UnitOfWork

LEASE = timedelta(minutes=5)
GIVE_UP_AFTER = timedelta(hours=24)
FIRST_RETRY = timedelta(seconds=30)
LONGEST_WAIT = timedelta(hours=2)
MAX_ERROR = 200


@dataclass(frozen=True)
class MailConfig:
    """Where mails come from and where their links point."""

    sender: str
    public_url: str


@dataclass(frozen=True)
class Outgoing:
    mail_id: str
    attempt: int
    message: EmailMessage


def retry_wait(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min ... doubling up to 2 h between attempts."""
    doublings = min(max(0, attempts - 1), 16)
    return min(FIRST_RETRY * (1 << doublings), LONGEST_WAIT)


def claim(
    uow: UnitOfWork, box: SecretBox, config: MailConfig, mail_id: str, now: datetime
) -> Outgoing | None:
    """Take the next attempt at `mail_id` and compose it; None when there is nothing
    to do now (sent, failed, unknown, or another attempt holds it or is scheduled)."""
    session = uow.session
    row = session.execute(
        select(MailDelivery)
        .where(MailDelivery.id == mail_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None or row.status != MailStatus.PENDING:
        return None
    if row.leased_until is not None and row.leased_until > now:
        return None  # another attempt is at it
    event = session.get(AuditEvent, row.event_id)
    user = session.get(User, row.user_id)
    org = session.get(Organization, row.org_id)
    if event is None or user is None or org is None:
        row.status, row.last_error = MailStatus.FAILED, "event or user gone"
        return None
    row.attempts += 1
    row.leased_until = row.next_attempt_at = now + LEASE
    if row.message_id is None:
        row.message_id = message_id(row.event_id, row.kind, row.recipient_kind, config.sender)
    kind = MailKind(row.kind)
    url = None
    if offers_repudiation(kind):
        if row.ticket_ciphertext is None:
            ticket = repudiation.issue(uow, user, row.event_id, now)
            row.ticket_ciphertext = box.encrypt_text(ticket)
        else:
            ticket = box.decrypt_text(row.ticket_ciphertext)
        url = repudiation.link(config.public_url, ticket)
    facts = facts_of(event, user, org, kind, row.recipient, url)
    session.flush()
    return Outgoing(row.id, row.attempts, compose(facts, config.sender, row.message_id))


def facts_of(
    event: AuditEvent,
    user: User,
    org: Organization,
    kind: MailKind,
    to: str,
    repudiation_url: str | None,
) -> MailFacts:
    details = event.details or {}
    # A sign-in names its visitor (what the front end saw); otherwise the caller.
    where_ip = details.get("client_ip") or event.source_ip
    where_agent = details.get("user_agent") or event.user_agent
    remaining = details.get("remaining")
    return MailFacts(
        kind=kind,
        to=to,
        org_name=org.id,
        occurred_at=event.occurred_at,
        support_contact=org.support_contact,
        display_name=user.display_name,
        where_ip=str(where_ip) if where_ip else None,
        where_agent=str(where_agent) if where_agent else None,
        by=event.actor_principal_id,
        set_id=_text(details.get("set_id")),
        remaining=remaining if isinstance(remaining, int) else None,
        until=_moment(details.get("until")),
        factor=_text(details.get("factor")),
        address_field=_text(details.get("field")),
        repudiation_url=repudiation_url,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def record_sent(uow: UnitOfWork, mail_id: str, attempt: int, now: datetime) -> None:
    row = _locked(uow, mail_id)
    if row is None or row.status == MailStatus.SENT:
        return
    row.status = MailStatus.SENT
    row.sent_at = now
    row.leased_until = None
    row.last_error = None
    row.ticket_ciphertext = None  # the link is in the mail; only its hash stays
    _audit(uow, row, EventType.NOTIFICATION_SENT, Outcome.SUCCESS, attempt, final=True)


def record_failure(uow: UnitOfWork, mail_id: str, attempt: int, error: str, now: datetime) -> bool:
    """One failed attempt: retried later, or `failed` after a day; True when final."""
    row = _locked(uow, mail_id)
    if row is None or row.status != MailStatus.PENDING:
        return False
    row.last_error = error[:MAX_ERROR]
    row.leased_until = None
    final = now - row.created_at >= GIVE_UP_AFTER
    if final:
        row.status = MailStatus.FAILED
        row.ticket_ciphertext = None
    else:
        row.next_attempt_at = now + retry_wait(row.attempts)
    _audit(uow, row, EventType.NOTIFICATION_FAILED, Outcome.FAILURE, attempt, final=final)
    return final


def _locked(uow: UnitOfWork, mail_id: str) -> MailDelivery | None:
    return uow.session.execute(
        select(MailDelivery)
        .where(MailDelivery.id == mail_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _audit(
    uow: UnitOfWork, row: MailDelivery, type_: str, outcome: str, attempt: int, *, final: bool
) -> None:
    user = uow.session.get(User, row.user_id)
    audit.append(
        uow,
        row.org_id,
        type_,
        outcome,
        audit.SYSTEM,
        user_id=None if user is None else user.external_id,
        details={
            "kind": row.kind,
            "recipient_kind": row.recipient_kind,  # which address, never the address
            "event_id": row.event_id,
            "attempt": attempt,
            "final": final,
        },
    )
