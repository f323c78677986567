"""Organization policy and lockout windows.

Lockout: after `threshold` failed TOTP or backup-code attempts within
`window`, the user is refused until `window` has passed since the lockout
started. Counted in the database, so it holds across processes; callers hold
the user's row lock (accounts.lock_user) while they count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from domain import audit
from domain import audit_types as types
from domain.errors import InvalidRequest, TooManyAttempts
from domain.models import AuthFailure, Organization, User

MIN_CODES, MAX_CODES = 1, 20


@dataclass(frozen=True)
class Lockout:
    threshold: int = 5
    window_seconds: int = 900

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)


def retry_after(user: User, now: datetime) -> int | None:
    """Seconds until the user may try again, or None when not locked."""
    if user.locked_until is None or user.locked_until <= now:
        return None
    return max(1, math.ceil((user.locked_until - now).total_seconds()))


def ensure_not_locked(
    session: Session, user: User, now: datetime, ctx: audit.Context, *, record: bool = True
) -> None:
    """Raise TooManyAttempts while locked; end an expired lockout (audited)."""
    wait = retry_after(user, now)
    if wait is not None:
        raise TooManyAttempts(wait)
    if user.locked_until is not None and record:
        user.locked_until = None
        session.execute(delete(AuthFailure).where(AuthFailure.user_id == user.id))
        audit.append(
            session, user.org_id, types.LOCKOUT_ENDED, types.SUCCESS, ctx, user_id=user.external_id
        )


def record_failure(
    session: Session, user: User, kind: str, now: datetime, ctx: audit.Context, rules: Lockout
) -> bool:
    """Count one failure; returns True when it starts a lockout."""
    session.add(AuthFailure(user_id=user.id, kind=kind, occurred_at=now))
    session.flush()
    recent = session.execute(
        select(func.count())
        .select_from(AuthFailure)
        .where(AuthFailure.user_id == user.id, AuthFailure.occurred_at > now - rules.window)
    ).scalar_one()
    if recent >= rules.threshold and (user.locked_until is None or user.locked_until <= now):
        user.locked_until = now + rules.window
        audit.append(
            session,
            user.org_id,
            types.LOCKOUT_STARTED,
            types.DENIED,
            ctx,
            user_id=user.external_id,
            details={"failures": int(recent), "locked_seconds": rules.window_seconds},
        )
        return True
    return False


def reset_failures(session: Session, user: User) -> None:
    session.execute(delete(AuthFailure).where(AuthFailure.user_id == user.id))


def set_policy(
    session: Session, org: Organization, enabled: object, code_count: object, ctx: audit.Context
) -> Organization:
    if not isinstance(enabled, bool):
        raise InvalidRequest(
            "backup_codes_enabled must be true or false", field="backup_codes_enabled"
        )
    if isinstance(code_count, bool) or not isinstance(code_count, int):
        raise InvalidRequest("code_count must be a whole number", field="code_count")
    if not MIN_CODES <= code_count <= MAX_CODES:
        raise InvalidRequest(f"code_count must be {MIN_CODES} to {MAX_CODES}", field="code_count")
    old = {"backup_codes_enabled": org.backup_codes_enabled, "code_count": org.code_count}
    org.backup_codes_enabled = enabled
    org.code_count = code_count
    new = {"backup_codes_enabled": enabled, "code_count": code_count}
    audit.append(
        session, org.id, types.POLICY_CHANGED, types.SUCCESS, ctx, details={"old": old, "new": new}
    )
    return org
