"""API tokens: issued once in clear, stored as SHA-256, looked up by that hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import accounts, audit
from domain import audit_types as types
from domain.errors import InvalidRequest
from domain.models import ApiToken

ROLES = ("user", "service", "admin", "auditor")
PREFIX = "mfa_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: Session, org_id: str, principal_id: str, role: str, ctx: audit.Context
) -> tuple[ApiToken, str]:
    """Returns the stored row and the token in clear, which is never stored."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    accounts.get_org(session, org_id)
    if role == "user":
        accounts.get_user(session, org_id, principal_id)
    if not principal_id or len(principal_id) > 128:
        raise InvalidRequest("principal id must be 1 to 128 characters", field="principal_id")
    plaintext = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        org_id=org_id, principal_id=principal_id, role=role, token_hash=_digest(plaintext)
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        org_id,
        types.TOKEN_ISSUED,
        types.SUCCESS,
        ctx,
        user_id=principal_id if role == "user" else None,
        details={"issued_token_id": row.id, "role": role, "principal_id": principal_id},
    )
    return row, plaintext


def authenticate(session: Session, presented: str) -> ApiToken | None:
    if not presented.startswith(PREFIX) or len(presented) > 200:
        return None
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == _digest(presented))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke(session: Session, token_id: str) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = datetime.now(UTC)
    return True
