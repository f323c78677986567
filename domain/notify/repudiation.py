""" "If this wasn't you": the one-time link a mail ends with, and what confirming it does.

A ticket is 256 random bits, shown only in the mail's link and kept as its
SHA-256 (like the API tokens: at that entropy a slow hash buys nothing). Looking
at the link changes nothing (mail scanners follow links); confirming it
deactivates every backup code of the user, revokes every token and session,
locks TOTP until an administrator resets MFA (whoever caused the event may hold
the authenticator), and audits `user.repudiated`, whose projection tells the
user by mail even where the organization's mails are off. A ticket works once,
for 7 days.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from domain import audit, limits, tokens
from domain.audit.types import EventType, Outcome
from domain.errors import TicketGone
from domain.models import AttemptLimit, BackupCode, RepudiationTicket, TotpEnrollment, User
from domain.sheets import store as sheet_store
from domain.sql import rowcount
from domain.uow import UnitOfWork

TICKET_BYTES = 32
VALID_FOR = timedelta(days=7)
PATH = "/v1/repudiations"
MAX_TICKET = 128  # a longer path segment is no ticket of ours


def digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()


def issue(uow: UnitOfWork, user: User, event_id: str, now: datetime) -> str:
    """A new ticket for the mail about `event_id`; only its hash is stored."""
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    uow.session.add(
        RepudiationTicket(
            ticket_hash=digest(ticket),
            user_id=user.id,
            event_id=event_id,
            created_at=now,
            expires_at=now + VALID_FOR,
        )
    )
    uow.session.flush()
    return ticket


def link(public_url: str, ticket: str) -> str:
    return f"{public_url.rstrip('/')}{PATH}/{ticket}"


def usable(uow: UnitOfWork, ticket: str, now: datetime, *, for_update: bool = False) -> User:
    """The user whose ticket this is, or TicketGone (unknown, used or expired alike:
    the answer tells a guesser nothing)."""
    if not ticket or len(ticket) > MAX_TICKET:
        raise TicketGone()
    query = select(RepudiationTicket).where(RepudiationTicket.ticket_hash == digest(ticket))
    if for_update:
        query = query.with_for_update()
    row = uow.session.execute(query).scalar_one_or_none()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise TicketGone()
    user = uow.session.get(User, row.user_id)
    if user is None:
        raise TicketGone()
    return user


@dataclass(frozen=True)
class Repudiated:
    codes_deactivated: int
    tokens_revoked: int


def repudiate(
    uow: UnitOfWork,
    ticket: str,
    now: datetime,
    source_ip: str | None,
    user_agent: str | None,
    request_id: str | None = None,
) -> Repudiated:
    """Confirm the ticket: lock the user out of what an attacker may hold."""
    session = uow.session
    user = uow.lock_user(usable(uow, ticket, now, for_update=True))
    row = session.execute(
        select(RepudiationTicket).where(RepudiationTicket.ticket_hash == digest(ticket))
    ).scalar_one()
    row.used_at = now
    ctx = audit.Context(
        principal_id=user.external_id,
        role="user",
        request_id=request_id,
        server_request_id=request_id,
        source_ip=source_ip,
        user_agent=user_agent,
    )
    deactivated = rowcount(
        session.execute(
            update(BackupCode)
            .where(BackupCode.user_id == user.id, BackupCode.deactivated_at.is_(None))
            .values(deactivated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    sheet_store.expire_unfetched(uow, user, now, ctx)
    revoked = tokens.revoke_all_of_user(uow, user.org_id, user.external_id, ctx, "user.repudiated")
    lock_totp(uow, user, now)
    audit.append(
        uow,
        user.org_id,
        EventType.USER_REPUDIATED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={
            "event_id": row.event_id,
            "codes_deactivated": deactivated,
            "tokens_revoked": revoked,
            "totp_locked": True,
        },
        at=now,
    )
    return Repudiated(deactivated, revoked)


def repudiated_since_enrollment(uow: UnitOfWork, user: User) -> datetime | None:
    """When the user last said "this wasn't me" about their current enrollment (a
    ticket used after it began), or None. Such a lock outlives an unlock: only a reset
    lifts it, since whoever caused the event may hold the authenticator."""
    return uow.session.execute(
        select(func.max(RepudiationTicket.used_at))
        .join(TotpEnrollment, TotpEnrollment.user_id == RepudiationTicket.user_id)
        .where(
            RepudiationTicket.user_id == user.id,
            RepudiationTicket.used_at.is_not(None),
            RepudiationTicket.used_at >= TotpEnrollment.created_at,
        )
    ).scalar_one_or_none()


def lock_totp(uow: UnitOfWork, user: User, now: datetime) -> None:
    """Lock TOTP as the consecutive cap would; only an administrator's reset lifts it
    (an unlock puts it back: domain.admin.unlock)."""
    state = limits.standing(uow.session, user, limits.TOTP)
    if state is None:
        state = AttemptLimit(
            user_id=user.id, factor=limits.TOTP, consecutive_failures=0, window_failures=0
        )
        uow.session.add(state)
    if state.locked_at is None:
        state.locked_at = now
    uow.session.flush()
