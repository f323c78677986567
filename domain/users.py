"""Users provisioned by the organization's application: upsert, pages, deletion, and
the user's own security events.

An application calls `upsert` at every sign-in, so a call that changes nothing
writes nothing (no `user.upserted` event, no updated_at): the chain is not flooded.
Addresses are personal data and the trail can never be erased: `user.upserted`
names the fields that changed, never a value.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import accounts, audit, notify
from domain.audit.types import EventType, Outcome
from domain.clock import utcnow, whole_millis
from domain.errors import InvalidRequest
from domain.models import (
    ApiToken,
    AttemptLimit,
    AuditEvent,
    AuthFailure,
    BackupCode,
    Regeneration,
    Role,
    Sheet,
    TotpEnrollment,
    UiTicket,
    User,
)
from domain.sql import rowcount
from domain.uow import UnitOfWork

# The profile's fields, in the order events name them.
PROFILE_FIELDS = ("email", "recovery_email", "display_name")
ADDRESS_FIELDS = ("email", "recovery_email")

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_OWN_EVENTS = 200
DEFAULT_OWN_EVENTS = 50


# --- upsert --------------------------------------------------------------------------


def checked_profile(given: Mapping[str, str | None]) -> dict[str, str | None]:
    """The fields given (a field left out is not in the mapping), each checked and
    normalized; None clears a field."""
    checked: dict[str, str | None] = {}
    for name, value in given.items():
        if name not in PROFILE_FIELDS:
            raise InvalidRequest(f"Unknown field {name!r}", field=name[:64])
        if value is None:
            checked[name] = None
        elif name in ADDRESS_FIELDS:
            checked[name] = accounts.normalized_address(value, name)
        else:
            checked[name] = accounts.check_display_name(value)
    return checked


def upsert(
    uow: UnitOfWork,
    org_id: str,
    external_id: str,
    given: Mapping[str, str | None],
    ctx: audit.Context,
) -> tuple[User, bool]:
    """Create the user or update the fields given; (the user, whether it was created).
    A field left out is kept (null when the user is created)."""
    accounts.check_user_id(external_id)
    profile = checked_profile(given)
    accounts.get_org(uow.session, org_id)
    user = _locked_or_none(uow, org_id, external_id)
    created = user is None
    old: dict[str, str | None] = dict.fromkeys(PROFILE_FIELDS)
    if user is None:
        user = _insert(uow, org_id, external_id, profile)
        created = user is not None
    if user is None:
        # A concurrent PUT created it first: this one updates what that one made.
        user = _locked_or_none(uow, org_id, external_id)
        assert user is not None, "a user whose insert collided must exist"
    if not created:
        old = {name: getattr(user, name) for name in PROFILE_FIELDS}
        for name, value in profile.items():
            setattr(user, name, value)
    changed = [name for name in PROFILE_FIELDS if getattr(user, name) != old[name]]
    if not created and not changed:
        return user, False
    if not created:
        user.updated_at = utcnow()
    uow.session.flush()
    event = audit.append(
        uow,
        org_id,
        EventType.USER_UPSERTED,
        Outcome.SUCCESS,
        ctx,
        user_id=external_id,
        details={"created": created, "changed": changed},
    )
    for name in ADDRESS_FIELDS:
        previous = old[name]
        if name in changed and previous is not None:
            notify.address_changed(uow, event, name, previous)
    return user, created


def _locked_or_none(uow: UnitOfWork, org_id: str, external_id: str) -> User | None:
    user = uow.session.execute(
        select(User)
        .where(User.org_id == org_id, User.external_id == external_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if user is not None:
        uow.note_locked(user.id)
    return user


def _insert(
    uow: UnitOfWork, org_id: str, external_id: str, profile: Mapping[str, str | None]
) -> User | None:
    """The new user, or None when a concurrent transaction inserted it first (the
    unique (org, external id) constraint; PostgreSQL makes this insert wait for the
    other's commit)."""
    user = User(org_id=org_id, external_id=external_id, **profile)
    try:
        with uow.savepoint():
            uow.session.add(user)
            uow.session.flush()
    except IntegrityError:
        if user in uow.session:
            uow.session.expunge(user)
        return None
    uow.note_locked(user.id)
    return user


# --- deletion ------------------------------------------------------------------------


def delete_user(uow: UnitOfWork, org_id: str, external_id: str, ctx: audit.Context) -> None:
    """Remove the user and everything of theirs (enrollment, codes, regenerations and
    their sheets, attempt limits, failures, tokens and browser sessions) in this one
    transaction, then record `user.deleted`; the user's audit events stay.

    Under the user's row lock a worker is either done (its sheet is removed here) or
    has not locked the user yet (it finds the regeneration gone and leaves it)."""
    session = uow.session
    user = accounts.get_locked_user(uow, org_id, external_id)
    regenerations = select(Regeneration.id).where(Regeneration.user_id == user.id)
    sheets = rowcount(
        session.execute(delete(Sheet).where(Sheet.regeneration_id.in_(regenerations)))
    )
    removed = {
        "regenerations_removed": rowcount(
            session.execute(delete(Regeneration).where(Regeneration.user_id == user.id))
        ),
        "codes_removed": rowcount(
            session.execute(delete(BackupCode).where(BackupCode.user_id == user.id))
        ),
        "was_enrolled": rowcount(
            session.execute(delete(TotpEnrollment).where(TotpEnrollment.user_id == user.id))
        )
        > 0,
        "tokens_removed": rowcount(
            session.execute(
                delete(ApiToken).where(
                    ApiToken.org_id == org_id,
                    ApiToken.role == Role.USER,
                    ApiToken.principal_id == external_id,
                )
            )
        ),
        "sheets_removed": sheets,
    }
    # The user's page links (ui_tickets name a principal, not a users row).
    session.execute(
        delete(UiTicket).where(
            UiTicket.org_id == org_id,
            UiTicket.role == Role.USER,
            UiTicket.principal_id == external_id,
        )
    )
    session.execute(delete(AttemptLimit).where(AttemptLimit.user_id == user.id))
    session.execute(delete(AuthFailure).where(AuthFailure.user_id == user.id))
    session.delete(user)
    session.flush()
    audit.append(
        uow,
        org_id,
        EventType.USER_DELETED,
        Outcome.SUCCESS,
        ctx,
        user_id=external_id,
        details=removed,
    )


# --- pages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    next_cursor: str | None


def page_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """A `limit` query value: 1 to `maximum`, `default` when absent."""
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidRequest(f"limit must be an integer from 1 to {maximum}", field="limit")
    return int(raw)


def encode_cursor(user: User) -> str:
    key = [user.created_at.astimezone(UTC).isoformat(), user.id]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the last user of the previous page; 422 for anything this
    service did not give out."""
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, user_id = json.loads(raw)
        at = datetime.fromisoformat(moment)
        if not isinstance(user_id, str) or at.tzinfo is None or len(user_id) > 36:
            raise ValueError("not ours")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("cursor is not one this service gave out", field="cursor") from None
    return at, user_id


def list_page(session: Session, org_id: str, limit: int, cursor: str | None) -> UserPage:
    """Oldest first, keyed on (created_at, id): a user is on exactly one page however
    many are created during the walk (those may or may not appear, at most once)."""
    accounts.get_org(session, org_id)
    query = select(User).where(User.org_id == org_id)
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(User.created_at > at, and_(User.created_at == at, User.id > last_id))
        )
    rows = list(
        session.execute(query.order_by(User.created_at, User.id).limit(limit + 1)).scalars()
    )
    if len(rows) > limit:
        return UserPage(rows[:limit], encode_cursor(rows[limit - 1]))
    return UserPage(rows, None)


# --- the user's own events -----------------------------------------------------------


def own_events(session: Session, user: User, limit: int) -> list[AuditEvent]:
    """The user's security events, newest first: those of their organization about
    their id since they were created (an id that was deleted and provisioned again
    does not see its predecessor's history)."""
    since = whole_millis(user.created_at)
    return list(
        session.execute(
            select(AuditEvent)
            .where(
                AuditEvent.org_id == user.org_id,
                AuditEvent.user_id == user.external_id,
                AuditEvent.occurred_at >= since,
            )
            .order_by(AuditEvent.seq.desc())
            .limit(limit)
        ).scalars()
    )
