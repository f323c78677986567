"""API tokens: issued once in clear, stored as SHA-256, looked up by that hash.

A token may expire (expires_at) and may be revoked (revoked_at); the lookup
refuses both, on every request, so a revocation holds from the next request on
in every process. issue, revoke and listing are the one implementation the CLI
and the token API share.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain import accounts, audit
from domain.audit.types import EventType, Outcome
from domain.errors import InvalidRequest, NotFound
from domain.models import ApiToken, Role, TokenKind
from domain.uow import UnitOfWork

# Plain strings (the values), for messages and the CLI's choices.
ROLES = tuple(role.value for role in Role)
KINDS = tuple(kind.value for kind in TokenKind)
PREFIX = "mfa_"
MIN_TTL = timedelta(seconds=60)
MAX_TTL = timedelta(days=365)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    uow: UnitOfWork,
    org_id: str,
    principal_id: str,
    role: str,
    ctx: audit.Context,
    *,
    ttl: timedelta | None = None,
    kind: str = TokenKind.BEARER,
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Returns the stored row and the token in clear, which is never stored.
    Without a ttl the token does not expire; callers bound the ttl they accept
    (the CLI 60 s to 365 d), this refuses only what no caller may ask for."""
    session = uow.session
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if ttl is not None and not MIN_TTL <= ttl <= MAX_TTL:
        raise InvalidRequest("ttl must be 60 seconds to 365 days", field="ttl")
    accounts.get_org(session, org_id)
    if role == Role.USER:
        accounts.get_user(session, org_id, principal_id)
    if not principal_id or len(principal_id) > 128:
        raise InvalidRequest("principal id must be 1 to 128 characters", field="principal_id")
    created = now or datetime.now(UTC)
    plaintext = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        org_id=org_id,
        principal_id=principal_id,
        role=role,
        kind=kind,
        token_hash=_digest(plaintext),
        created_at=created,
        expires_at=created + ttl if ttl is not None else None,
    )
    session.add(row)
    session.flush()
    audit.append(
        uow,
        org_id,
        EventType.TOKEN_ISSUED,
        Outcome.SUCCESS,
        ctx,
        user_id=principal_id if role == Role.USER else None,
        details={
            "issued_token_id": row.id,
            "role": role,
            "principal_id": principal_id,
            "kind": kind,
            "ttl_seconds": int(ttl.total_seconds()) if ttl is not None else None,
        },
    )
    return row, plaintext


def usable(row: ApiToken, now: datetime) -> bool:
    """Neither revoked nor expired at `now`."""
    return row.revoked_at is None and (row.expires_at is None or now < row.expires_at)


def authenticate(session: Session, presented: str, now: datetime | None = None) -> ApiToken | None:
    """The token's row, or None for an unknown, revoked or expired token."""
    if not presented.startswith(PREFIX) or len(presented) > 200:
        return None
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == _digest(presented))
    ).scalar_one_or_none()
    if row is None or not usable(row, now or datetime.now(UTC)):
        return None
    return row


def _revoked_event(uow: UnitOfWork, row: ApiToken, ctx: audit.Context, reason: str) -> None:
    audit.append(
        uow,
        row.org_id,
        EventType.TOKEN_REVOKED,
        Outcome.SUCCESS,
        ctx,
        user_id=row.principal_id if row.role == Role.USER else None,
        details={
            "revoked_token_id": row.id,
            "role": row.role,
            "principal_id": row.principal_id,
            "kind": row.kind,
            "reason": reason,
        },
    )


def revoke(
    uow: UnitOfWork,
    token_id: str,
    ctx: audit.Context,
    *,
    org_id: str | None = None,
    reason: str = "revoked",
) -> ApiToken:
    """Revoke one token (by whom: ctx), audited; NotFound for an unknown token or one
    of another organization (when org_id is given). Revoking twice changes nothing
    and appends nothing."""
    session = uow.session
    row = session.execute(
        select(ApiToken).where(ApiToken.id == token_id).with_for_update()
    ).scalar_one_or_none()
    if row is None or (org_id is not None and row.org_id != org_id):
        raise NotFound("no such token")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
        _revoked_event(uow, row, ctx, reason)
    return row


def revoke_all_of_user(
    uow: UnitOfWork, org_id: str, user_external_id: str, ctx: audit.Context, reason: str
) -> int:
    """Revoke every live token and session of a user (an MFA reset), one event each."""
    session = uow.session
    now = datetime.now(UTC)
    rows = list(
        session.execute(
            select(ApiToken)
            .where(
                ApiToken.org_id == org_id,
                ApiToken.role == Role.USER,
                ApiToken.principal_id == user_external_id,
                ApiToken.revoked_at.is_(None),
            )
            .order_by(ApiToken.created_at, ApiToken.id)
            .with_for_update()
        ).scalars()
    )
    if rows:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id.in_([r.id for r in rows]))
            .values(revoked_at=now)
            .execution_options(synchronize_session="fetch")
        )
    for row in rows:
        _revoked_event(uow, row, ctx, reason)
    return len(rows)


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never the token itself, nor its hash."""

    token_id: str
    principal_id: str
    role: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiToken) -> TokenInfo:
        return cls(
            row.id,
            row.principal_id,
            row.role,
            row.kind,
            row.created_at,
            row.expires_at,
            row.last_used_at,
            row.revoked_at,
        )


def list_tokens(
    session: Session,
    org_id: str,
    *,
    include_revoked: bool = True,
    role: str | None = None,
    principal_id: str | None = None,
    limit: int | None = None,
    now: datetime | None = None,
) -> list[TokenInfo]:
    """The organization's tokens, newest first; revoked and expired ones too unless
    include_revoked is False."""
    accounts.get_org(session, org_id)
    query = select(ApiToken).where(ApiToken.org_id == org_id)
    if role is not None:
        query = query.where(ApiToken.role == role)
    if principal_id is not None:
        query = query.where(ApiToken.principal_id == principal_id)
    if not include_revoked:
        moment = now or datetime.now(UTC)
        query = query.where(
            ApiToken.revoked_at.is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > moment),
        )
    query = query.order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [TokenInfo.of(row) for row in session.execute(query).scalars()]
