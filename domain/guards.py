"""May this user use backup codes now, and the one way a use case refuses on record.

Regeneration intake, sign-in, enrollment and the sheet's retrieval each refuse with
their own event type (EventType.REGENERATION_REFUSED, SIGNIN_REFUSED, ENROLLMENT_FAILED,
SHEET_RETRIEVAL_REFUSED); the worker asks the same question of a queued regeneration
and fails it instead of refusing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session

from domain import accounts, audit, limits
from domain.audit.types import EventType, Outcome
from domain.errors import (
    BackupCodesDisabled,
    BackupCodesLocked,
    DomainError,
    InvalidRequest,
    InvalidTotp,
    MfaNotEnrolled,
    TooManyAttempts,
    TotpLocked,
)
from domain.models import Organization, TotpEnrollment, User
from domain.uow import UnitOfWork

# What the attempt limits raise: a throttle, or a lock at the consecutive cap.
LIMIT_REFUSALS = (TooManyAttempts, BackupCodesLocked, TotpLocked)


def refuse(
    uow: UnitOfWork,
    user: User,
    event_type: EventType,
    error: DomainError,
    ctx: audit.Context,
    **details: object,
) -> DomainError:
    """Record the refusal as `event_type` (with `details` and the error's slug as
    `reason`) and return the error, committed so the record survives the request's
    failure: `raise guards.refuse(...)`. A wrong input is the user's failure; a refusal
    by policy or state is a denial."""
    mistaken = isinstance(error, InvalidRequest | InvalidTotp)
    outcome = Outcome.FAILURE if mistaken else Outcome.DENIED
    return audit.refusal(
        uow, user.org_id, user.external_id, event_type, error, ctx, outcome, details
    )


@contextmanager
def refusing(
    uow: UnitOfWork, user: User, event_type: EventType, ctx: audit.Context, **details: object
) -> Iterator[None]:
    """A throttle or lock raised inside the block becomes a refusal on record."""
    try:
        yield
    except LIMIT_REFUSALS as refused:
        raise refuse(uow, user, event_type, refused, ctx, **details) from None


def confirmed_enrollment(session: Session, user: User, org: Organization) -> TotpEnrollment:
    """The user's confirmed TOTP enrollment, when the organization allows backup codes;
    raises BackupCodesDisabled or MfaNotEnrolled (not recorded: the caller decides how)."""
    if not org.backup_codes_enabled:
        raise BackupCodesDisabled()
    # Fresh: an earlier read in this transaction may predate the user's row lock.
    enrollment = session.get(TotpEnrollment, user.id, populate_existing=True)
    if enrollment is None or enrollment.confirmed_at is None:
        raise MfaNotEnrolled()
    return enrollment


def require_usable(
    uow: UnitOfWork, user: User, event_type: EventType, ctx: audit.Context
) -> Organization:
    """The user's organization, when backup codes are on and the user is enrolled;
    otherwise the refusal, on record."""
    org = accounts.get_org(uow.session, user.org_id)
    try:
        confirmed_enrollment(uow.session, user, org)
    except (BackupCodesDisabled, MfaNotEnrolled) as refused:
        raise refuse(uow, user, event_type, refused, ctx) from None
    return org


def require_totp_open(
    uow: UnitOfWork,
    user: User,
    event_type: EventType,
    now: datetime,
    ctx: audit.Context,
    rules: limits.Limits,
    **details: object,
) -> None:
    """The TOTP is neither throttled nor locked; a throttle whose window has passed is
    ended first (a write: call it under the user's lock). `details` go into the
    refusal's event."""
    with refusing(uow, user, event_type, ctx, **details):
        limits.end_expired(uow, user, limits.TOTP, now, ctx, rules)
        limits.check_totp(uow.session, user, now, rules)


def require_usable_as_read(
    uow: UnitOfWork,
    user: User,
    event_type: EventType,
    ctx: audit.Context,
    *,
    backup_codes_enabled: bool,
    enrolled: bool,
) -> None:
    """require_usable, from a policy and an enrollment the caller read with the user."""
    refused: DomainError | None = None
    if not backup_codes_enabled:
        refused = BackupCodesDisabled()
    elif not enrolled:
        refused = MfaNotEnrolled()
    if refused is not None:
        raise refuse(uow, user, event_type, refused, ctx)


def require_backup_codes_open(
    uow: UnitOfWork,
    user: User,
    standing: limits.BackupStanding,
    event_type: EventType,
    now: datetime,
    ctx: audit.Context,
    rules: limits.Limits,
) -> limits.FactorState:
    """Backup codes are neither throttled (for the user or this source) nor locked, as
    `standing` (read under the user's lock) says; a throttle whose window has passed
    is ended first. Returns the attempt limits after."""
    with refusing(uow, user, event_type, ctx):
        state = limits.end_expired(uow, user, limits.BACKUP_CODES, now, ctx, rules, standing.state)
        limits.refuse_backup_codes(replace(standing, state=state), now, rules)
    return state
