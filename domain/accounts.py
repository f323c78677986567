"""Organizations and users: creation and lookup (the row lock: UnitOfWork.lock_user)."""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.errors import Conflict, InvalidRequest, NotFound
from domain.models import Organization, User
from domain.uow import UnitOfWork

_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_USER_ID = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
MAX_DISPLAY_NAME = 200
# Bidirectional embeddings, overrides and isolates: they make a name read as another.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_user_id(external_id: str) -> str:
    """1 to 128 of letters, digits and . _ @ + - (the contract's user ids)."""
    # fullmatch: `$` would also accept a trailing newline.
    if not _USER_ID.fullmatch(external_id):
        raise InvalidRequest(
            "user ids are 1 to 128 of letters, digits and . _ @ + -", field="user_id"
        )
    return external_id


def normalized_address(value: str, field: str) -> str:
    """An email address checked for syntax (never DNS: no lookup leaves the service
    for a user's input), in its normalized form (the domain lower-cased, Unicode NFC)."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        # The library's message may quote the input; the field is enough.
        raise InvalidRequest("not a valid email address", field=field) from None


def check_display_name(value: str) -> str:
    """1 to 200 characters, not only spaces, no control character (C0, C1, DEL), no
    lone surrogate, no bidirectional override: a name shown to administrators and
    printed on sheets must read as what it is."""
    if not 1 <= len(value) <= MAX_DISPLAY_NAME or not value.strip():
        raise InvalidRequest(
            f"display_name is 1 to {MAX_DISPLAY_NAME} characters, not only spaces",
            field="display_name",
        )
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            raise InvalidRequest(
                "display_name may not hold control characters", field="display_name"
            )
    return value


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
    check_user_id(external_id)
    if email is not None:
        email = normalized_address(email, "email")
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
