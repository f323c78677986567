"""API tokens: issued once in clear, stored as SHA-256, looked up by that hash.

A token may expire (expires_at) and may be revoked (revoked_at); the lookup
refuses both, on every request, so a revocation holds from the next request on
in every process. issue, revoke and listing are the one implementation the CLI
and the token API share.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, and_, bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from domain import accounts, audit, sql
from domain.audit.types import EventType, Outcome
from domain.errors import InvalidRequest, NotFound
from domain.models import ApiToken, Role, TokenKind, UiTicket
from domain.sql import rowcount
from domain.uow import UnitOfWork

# Plain strings (the values), for messages and the CLI's choices.
ROLES = tuple(role.value for role in Role)
KINDS = tuple(kind.value for kind in TokenKind)
PREFIX = "mfa_"
MIN_TTL = timedelta(seconds=60)
MAX_TTL = timedelta(days=365)
# A user token over the API (POST /v1/users/{id}/tokens): short-lived by design.
USER_TOKEN_TTL = range(60, 3601)
DEFAULT_USER_TOKEN_TTL = 900
# last_used_at is written at most this often a token (never on every request).
LAST_USED_GRANULARITY = timedelta(seconds=60)
MAX_TOKEN_ID = 36  # api_tokens.id is a VARCHAR(36)
# A browser session (kind `session`, domain.ui_sessions) ends after this long unused;
# "unused" reads last_used_at, so the limit holds to within LAST_USED_GRANULARITY.
SESSION_IDLE = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def issue_user_token(
    uow: UnitOfWork,
    org_id: str,
    user_external_id: str,
    ttl_seconds: int,
    ctx: audit.Context,
    *,
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A short-lived user token, issued by the application's backend for a user it
    signed in (60 to 3600 s); NotFound for a user outside the organization."""
    if isinstance(ttl_seconds, bool) or ttl_seconds not in USER_TOKEN_TTL:
        raise InvalidRequest("ttl_seconds must be 60 to 3600", field="ttl_seconds")
    accounts.get_user(uow.session, org_id, user_external_id)
    return issue(
        uow,
        org_id,
        user_external_id,
        Role.USER,
        ctx,
        ttl=timedelta(seconds=ttl_seconds),
        now=now,
    )


def usable(row: ApiToken | Presented, now: datetime) -> bool:
    """Neither revoked nor expired at `now` (nor, for a browser session, idle)."""
    if row.revoked_at is not None or (row.expires_at is not None and now >= row.expires_at):
        return False
    if row.kind == TokenKind.SESSION:
        return now - (row.last_used_at or row.created_at) < SESSION_IDLE
    return True


def _could_be_ours(presented: str) -> bool:
    """Worth a lookup: our prefix, and not longer than any token we issue."""
    return presented.startswith(PREFIX) and len(presented) <= 200


def authenticate(session: Session, presented: str, now: datetime | None = None) -> ApiToken | None:
    """The token's row, or None for an unknown, revoked or expired token."""
    if not _could_be_ours(presented):
        return None
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == _digest(presented))
    ).scalar_one_or_none()
    if row is None or not usable(row, now or datetime.now(UTC)):
        return None
    return row


@dataclass(frozen=True)
class Presented:
    """What a request needs of its token's row (lookup)."""

    id: str
    org_id: str
    principal_id: str
    role: str
    kind: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None


_TOKENS = ApiToken.__table__
_LOOKUP = select(*(_TOKENS.c[name] for name in Presented.__dataclass_fields__)).where(
    _TOKENS.c.token_hash == bindparam("digest")
)


def lookup(conn: Connection, presented: str, now: datetime) -> Presented | None:
    """authenticate for every request: one Core read on `conn`, no session or ORM
    object (their cost is per request); None for an unknown, revoked or expired token."""
    if not _could_be_ours(presented):
        return None
    found = sql.run(conn, _LOOKUP, {"digest": _digest(presented)}).first()
    if found is None:
        return None
    row = Presented(*found)
    return row if usable(row, now) else None


def due_for_use_mark(row: ApiToken | Presented, now: datetime) -> bool:
    """Is the row's last_used_at (as just read) null or a minute old?"""
    return row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY


def mark_used(session: Session, token_id: str, now: datetime) -> bool:
    """Set last_used_at to now unless another request did within the minute; a row
    locked by a concurrent writer (a revocation) is skipped, never waited for (FOR
    UPDATE SKIP LOCKED where the database has it). True when the row was written."""
    stale = or_(
        ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_GRANULARITY
    )
    lockable = (
        select(ApiToken.id)
        .where(ApiToken.id == token_id, stale)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    changed = session.execute(
        update(ApiToken)
        .where(ApiToken.id == lockable, stale)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(changed) == 1


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
    if not token_id or len(token_id) > MAX_TOKEN_ID or "\x00" in token_id:
        # No token has such an id; PostgreSQL would refuse a NUL in the parameter.
        raise NotFound("no such token")
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
    """Revoke every live token and session of a user (an MFA reset, a repudiation), one
    event each, and delete the user's page links: one not used yet would open a new
    session after the reset."""
    session = uow.session
    now = datetime.now(UTC)
    session.execute(
        delete(UiTicket).where(
            UiTicket.org_id == org_id,
            UiTicket.role == Role.USER,
            UiTicket.principal_id == user_external_id,
        )
    )
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
    after: TokenCursor | None = None,
    now: datetime | None = None,
) -> list[TokenInfo]:
    """The organization's tokens, newest first (after `after`, when given); revoked
    and expired ones too unless include_revoked is False."""
    accounts.get_org(session, org_id)
    query = select(ApiToken).where(ApiToken.org_id == org_id)
    if role is not None:
        query = query.where(ApiToken.role == role)
    if principal_id is not None:
        query = query.where(ApiToken.principal_id == principal_id)
    if not include_revoked:
        moment = now or datetime.now(UTC)
        idle_since = moment - SESSION_IDLE
        query = query.where(
            ApiToken.revoked_at.is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > moment),
            # A browser session unused for its idle limit is over too (usable()).
            or_(
                ApiToken.kind != TokenKind.SESSION,
                ApiToken.last_used_at > idle_since,
                and_(ApiToken.last_used_at.is_(None), ApiToken.created_at > idle_since),
            ),
        )
    if after is not None:
        query = query.where(
            or_(
                ApiToken.created_at < after.created_at,
                and_(ApiToken.created_at == after.created_at, ApiToken.id < after.token_id),
            )
        )
    query = query.order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [TokenInfo.of(row) for row in session.execute(query).scalars()]


# --- pages of GET /v1/org/tokens ----------------------------------------------------


@dataclass(frozen=True)
class TokenCursor:
    """Where a page ended: the last token's (created_at, id), newest first."""

    created_at: datetime
    token_id: str

    def encode(self) -> str:
        micros = (self.created_at - _EPOCH) // timedelta(microseconds=1)
        raw = f"tok:{micros}:{self.token_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> TokenCursor:
        try:
            if len(cursor) > 128:
                raise ValueError(cursor)
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            prefix, micros, token_id = raw.split(":", 2)
            if prefix != "tok" or not micros.isdigit() or len(micros) > 18:
                raise ValueError(cursor)
            if not token_id or len(token_id) > MAX_TOKEN_ID or not token_id.isprintable():
                raise ValueError(cursor)
            moment = _EPOCH + timedelta(microseconds=int(micros))
        except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
            raise InvalidRequest(
                "cursor is not one this service gave out", field="cursor"
            ) from None
        return cls(moment, token_id)


def page_of_tokens(
    session: Session,
    org_id: str,
    *,
    limit: int,
    after: TokenCursor | None = None,
    include_revoked: bool = True,
    role: str | None = None,
    principal_id: str | None = None,
) -> tuple[list[TokenInfo], str | None]:
    """One page, newest first, and the cursor of the next (None on the last page)."""
    rows = list_tokens(
        session,
        org_id,
        include_revoked=include_revoked,
        role=role,
        principal_id=principal_id,
        limit=limit + 1,
        after=after,
    )
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], TokenCursor(last.created_at, last.token_id).encode()
