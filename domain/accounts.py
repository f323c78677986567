"""Organizations and users: creation, lookup, the per-user row lock."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.errors import Conflict, InvalidRequest, NotFound
from domain.models import Organization, User

_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


# session.info key: (the transaction, ids of the users whose row it has locked).
_LOCKED = "locked_user_ids"


def create_org(session: Session, org_id: str, ctx: audit.Context) -> Organization:
    if not _ORG_ID.match(org_id):
        raise InvalidRequest(
            "organization ids are 1 to 64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit",
            field="org",
        )
    if session.get(Organization, org_id) is not None:
        raise Conflict(f"organization {org_id!r} already exists")
    org = Organization(id=org_id, backup_codes_enabled=True, code_count=5)
    session.add(org)
    session.flush()
    audit.ensure_head(session, org_id)
    audit.append(
        session,
        org_id,
        EventType.ORG_CREATED,
        Outcome.SUCCESS,
        ctx,
        details={"backup_codes_enabled": True, "code_count": 5},
    )
    return org


def get_org(session: Session, org_id: str) -> Organization:
    org = session.get(Organization, org_id)
    if org is None:
        raise NotFound(f"no organization {org_id!r}")
    return org


def create_user(
    session: Session, org_id: str, external_id: str, email: str | None, ctx: audit.Context
) -> User:
    get_org(session, org_id)
    if not _USER_ID.match(external_id):
        raise InvalidRequest(
            "user ids are 1 to 128 of letters, digits and . _ @ + -", field="user_id"
        )
    if email is not None and not _EMAIL.match(email):
        raise InvalidRequest("not an email address", field="email")
    if find_user(session, org_id, external_id) is not None:
        raise Conflict(f"user {external_id!r} already exists in {org_id!r}")
    user = User(org_id=org_id, external_id=external_id, email=email)
    session.add(user)
    session.flush()
    audit.append(session, org_id, EventType.USER_CREATED, Outcome.SUCCESS, ctx, user_id=external_id)
    return user


def find_user(session: Session, org_id: str, external_id: str) -> User | None:
    return session.execute(
        select(User).where(User.org_id == org_id, User.external_id == external_id)
    ).scalar_one_or_none()


def get_user(session: Session, org_id: str, external_id: str, *, for_update: bool = False) -> User:
    """The user of this organization, or NotFound: never a hint that it exists elsewhere.
    `for_update` takes the row lock in the same read (see lock_user)."""
    if not for_update:
        user = find_user(session, org_id, external_id)
    else:
        user = session.execute(
            select(User)
            .where(User.org_id == org_id, User.external_id == external_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if user is not None:
            _locked_in_this_transaction(session).add(user.id)
    if user is None:
        raise NotFound("no such user")
    return user


def _locked_in_this_transaction(session: Session) -> set[str]:
    # Keyed on the innermost (sub)transaction: a savepoint rolled back releases the
    # row locks taken inside it.
    transaction = session.get_nested_transaction() or session.get_transaction()
    held = session.info.get(_LOCKED)
    if held is None or held[0] is not transaction:
        held = (transaction, set())
        session.info[_LOCKED] = held
    locked: set[str] = held[1]
    return locked


def lock_user(session: Session, user: User) -> User:
    """Take the user's row lock (PostgreSQL; SQLite's writer lock already holds)
    so that spending, regenerating and counting failures never interleave. Once
    held, the row is fresh for the rest of the transaction: no second read."""
    held = _locked_in_this_transaction(session)
    if user.id in held:
        return user
    locked = session.execute(
        select(User)
        .where(User.id == user.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    held.add(locked.id)
    return locked
