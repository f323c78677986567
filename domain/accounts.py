"""Organizations and users: creation and lookup (the row lock: UnitOfWork.lock_user)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.errors import Conflict, InvalidRequest, NotFound
from domain.models import Organization, User
from domain.uow import UnitOfWork

_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def create_org(uow: UnitOfWork, org_id: str, ctx: audit.Context) -> Organization:
    session = uow.session
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
        uow,
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
    uow: UnitOfWork, org_id: str, external_id: str, email: str | None, ctx: audit.Context
) -> User:
    session = uow.session
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
    audit.append(uow, org_id, EventType.USER_CREATED, Outcome.SUCCESS, ctx, user_id=external_id)
    return user


def find_user(session: Session, org_id: str, external_id: str) -> User | None:
    return session.execute(
        select(User).where(User.org_id == org_id, User.external_id == external_id)
    ).scalar_one_or_none()


def get_user(session: Session, org_id: str, external_id: str) -> User:
    """The user of this organization, or NotFound: never a hint that it exists elsewhere."""
    user = find_user(session, org_id, external_id)
    if user is None:
        raise NotFound("no such user")
    return user


def get_locked_user(uow: UnitOfWork, org_id: str, external_id: str) -> User:
    """get_user, with the row lock taken in the same read (see UnitOfWork.lock_user)."""
    user = uow.session.execute(
        select(User)
        .where(User.org_id == org_id, User.external_id == external_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("no such user")
    uow.note_locked(user.id)
    return user
