"""Use case: spend a backup code at sign-in.

One argon2 verification per attempt, whatever the number of codes: the code's
two-symbol locator (not secret) finds the one candidate row, and a miss spends a
verification on a dummy hash, so a malformed code, a wrong code and an unknown
user all cost what a right code costs.

Where the user's row lock is taken: AFTER the argon2 verification, not before.
The verification is the slow part (~27 ms at the default profile) and needs no
lock, so concurrent attempts for one user hash in parallel; only the short tail
(re-check the lockout, spend, count the failure) is serialised by the lock. The
lockout is re-read under the lock, so an attempt that hashed while another
process started a lockout is refused (429, its verdict never revealed, nothing
counted), and failures are counted one at a time: of any number of concurrent
wrong attempts at most `threshold` get a verdict. Spending is a conditional
UPDATE (... AND spent_at IS NULL AND deactivated_at IS NULL), which on its own
accepts exactly one of any number of concurrent attempts and refuses a code a
concurrent regeneration deactivated (PostgreSQL re-checks the WHERE after the
other transaction commits). On SQLite the unit of work's BEGIN IMMEDIATE holds
the database's writer lock from the first statement, so there attempts are
simply serialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from domain import accounts, audit, policy
from domain import audit_types as types
from domain.codes import CODE_LENGTH, normalise
from domain.errors import (
    BackupCodesDisabled,
    DomainError,
    MfaNotEnrolled,
    NotFound,
    TooManyAttempts,
)
from domain.models import BackupCode, TotpEnrollment, User
from domain.services import Services

LOW_WATERMARK = 2  # `low` when this many or fewer codes remain
FAILURE_KIND = "backup_code"
_FILLER = "0" * CODE_LENGTH  # what a dummy verification checks when the input is no code


@dataclass(frozen=True)
class VerifyResult:
    accepted: bool
    remaining: int
    low: bool

    def as_dict(self) -> dict[str, object]:
        return {"accepted": self.accepted, "remaining": self.remaining, "low": self.low}


def verify_backup_code(
    session: Session,
    services: Services,
    org_id: str,
    user_external_id: str,
    code: object,
    now: datetime,
    ctx: audit.Context,
) -> VerifyResult:
    candidate = normalise(code) if isinstance(code, str) else None
    user = accounts.find_user(session, org_id, user_external_id)
    if user is None:
        # Another organization's user and nobody at all look the same, in status
        # and in time: both cost one verification.
        services.hasher.verify_nothing(candidate or _FILLER)
        raise NotFound("no such user")
    _check_allowed(session, user, now, ctx)

    row = _candidate_row(session, user, candidate) if candidate is not None else None
    if row is not None and candidate is not None:
        matches = services.hasher.verify(row.hash, candidate)
    else:
        matches = services.hasher.verify_nothing(candidate or _FILLER)

    user = accounts.lock_user(session, user)  # see the module docstring for why here
    try:
        policy.ensure_not_locked(session, user, now, ctx)  # also ends an expired lockout
    except TooManyAttempts as locked:
        raise _refuse(session, user, locked, ctx) from None

    accepted = row is not None and matches and _spend(session, row, now)
    remaining = _remaining(session, user)
    if accepted and row is not None and candidate is not None:
        policy.reset_failures(session, user)
        if services.hasher.needs_rehash(row.hash):
            # Keeps every stored hash on the current parameters (a spent code can
            # never verify again; live codes move over at their next regeneration).
            row.hash = services.hasher.hash(candidate)
        audit.append(
            session,
            user.org_id,
            types.CODE_ACCEPTED,
            types.SUCCESS,
            ctx,
            user_id=user.external_id,
            details={"remaining": remaining, "set_id": row.set_id},
        )
    else:
        audit.append(
            session,
            user.org_id,
            types.CODE_REJECTED,
            types.FAILURE,
            ctx,
            user_id=user.external_id,
            details={"remaining": remaining},
        )
        policy.record_failure(session, user, FAILURE_KIND, now, ctx, services.lockout)
    return VerifyResult(accepted=accepted, remaining=remaining, low=remaining <= LOW_WATERMARK)


def _check_allowed(session: Session, user: User, now: datetime, ctx: audit.Context) -> None:
    """Refusals that need no verification: policy off, not enrolled, locked (an early,
    unlocked read; the lockout is read again under the lock before anything counts)."""
    org = accounts.get_org(session, user.org_id)
    if not org.backup_codes_enabled:
        raise _refuse(session, user, BackupCodesDisabled(), ctx)
    enrollment = session.get(TotpEnrollment, user.id)
    if enrollment is None or enrollment.confirmed_at is None:
        raise _refuse(session, user, MfaNotEnrolled(), ctx)
    wait = policy.retry_after(user, now)
    if wait is not None:
        raise _refuse(session, user, TooManyAttempts(wait), ctx)


def _refuse(session: Session, user: User, error: DomainError, ctx: audit.Context) -> DomainError:
    """The refusal is audited and committed although the request fails."""
    return audit.refusal(session, user.org_id, user.external_id, types.SIGNIN_REFUSED, error, ctx)


def _candidate_row(session: Session, user: User, candidate: str) -> BackupCode | None:
    """The one active, unspent code with this locator (locators are unique within a set)."""
    return (
        session.execute(
            select(BackupCode)
            .where(
                BackupCode.user_id == user.id,
                BackupCode.locator == candidate[:2],
                BackupCode.spent_at.is_(None),
                BackupCode.deactivated_at.is_(None),
            )
            .order_by(BackupCode.generation.desc())
            .limit(1)
        )
        .scalars()
        .first()
    )


def _spend(session: Session, row: BackupCode, now: datetime) -> bool:
    """True for the one attempt whose UPDATE changed the row."""
    changed = session.execute(
        update(BackupCode)
        .where(
            BackupCode.id == row.id,
            BackupCode.spent_at.is_(None),
            BackupCode.deactivated_at.is_(None),
        )
        .values(spent_at=now)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], changed).rowcount == 1


def _remaining(session: Session, user: User) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(BackupCode)
            .where(
                BackupCode.user_id == user.id,
                BackupCode.spent_at.is_(None),
                BackupCode.deactivated_at.is_(None),
            )
        ).scalar_one()
    )
