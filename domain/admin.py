"""Administration use cases: the organization's policy, revoking a user's codes,
resetting a user's MFA; and the user's own MFA status (GET /v1/me/mfa)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from domain import accounts, audit, limits, policy, tokens
from domain.audit.types import EventType, Outcome
from domain.clock import utcnow
from domain.codes import LOW_WATERMARK
from domain.errors import MfaNotEnrolled, NotFound
from domain.models import (
    IN_PROGRESS,
    BackupCode,
    Organization,
    Regeneration,
    RegenerationStatus,
    Sheet,
    TotpEnrollment,
    User,
)
from domain.notify import repudiation
from domain.ports import Services
from domain.sheets import store as sheet_store
from domain.sql import rowcount
from domain.uow import UnitOfWork

# A reset fails every regeneration whose sheet could still be fetched or made:
# its codes are gone, so the sheet would print dead codes.
_UNFINISHED = IN_PROGRESS | {RegenerationStatus.READY}


# --- policy -----------------------------------------------------------------------


def get_policy(session: Session, org_id: str) -> policy.Policy:
    return policy.Policy.of(accounts.get_org(session, org_id))


def put_policy(
    uow: UnitOfWork,
    org_id: str,
    enabled: bool,
    code_count: int,
    ctx: audit.Context,
    notify: policy.NotifyChange | None = None,
) -> policy.Policy:
    """Replace the policy (the mail settings only where given); audited with old and new."""
    session = uow.session
    # Row lock: concurrent PUTs are serialised, so each audits the old value it replaced.
    org = session.execute(
        select(Organization)
        .where(Organization.id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if org is None:
        raise NotFound(f"no organization {org_id!r}")
    policy.set_policy(uow, org, enabled, code_count, ctx, notify)
    session.flush()
    return policy.Policy.of(org)


# --- a user's codes and enrollment --------------------------------------------------


def revoke_codes(uow: UnitOfWork, org_id: str, user_external_id: str, ctx: audit.Context) -> None:
    """Deactivate every active code of the user (spent ones too, as a regeneration
    does); the audited count is of the codes that could still have been used. A
    sheet not yet retrieved is deleted (its regeneration ends expired): it would
    hand the user dead codes."""
    session = uow.session
    user = uow.lock_user(accounts.get_user(session, org_id, user_external_id))
    now = utcnow()
    usable = _count_codes(session, user, unspent_only=True)
    session.execute(
        update(BackupCode)
        .where(BackupCode.user_id == user.id, BackupCode.deactivated_at.is_(None))
        .values(deactivated_at=now)
        .execution_options(synchronize_session=False)
    )
    audit.append(
        uow,
        org_id,
        EventType.CODES_REVOKED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"count": usable},
    )
    sheet_store.expire_unfetched(uow, user, now, ctx)


def reset_mfa(uow: UnitOfWork, org_id: str, user_external_id: str, ctx: audit.Context) -> None:
    """Remove the enrollment and every code (the user enrolls again), fail the
    unfinished regenerations and delete their sheets, clear throttles and locks, and
    revoke every token and session of the user: a stolen token must not enroll the
    attacker's authenticator once the help desk has reset the victim."""
    session = uow.session
    # Under the user's lock a worker is either done (its set is removed here) or
    # has not started (it finds its regeneration failed and leaves it).
    user = uow.lock_user(accounts.get_user(session, org_id, user_external_id))
    now = utcnow()
    removed = rowcount(session.execute(delete(BackupCode).where(BackupCode.user_id == user.id)))
    was_enrolled = (
        rowcount(session.execute(delete(TotpEnrollment).where(TotpEnrollment.user_id == user.id)))
        > 0
    )

    pending = list(
        session.execute(
            select(Regeneration)
            .where(Regeneration.user_id == user.id, Regeneration.status.in_(_UNFINISHED))
            .order_by(Regeneration.created_at)
            .with_for_update()
        ).scalars()
    )
    for reg in pending:
        had_sheet = session.execute(delete(Sheet).where(Sheet.regeneration_id == reg.id))
        reg.status = RegenerationStatus.FAILED
        reg.failure = MfaNotEnrolled.slug
        reg.completed_at = now
        reg.totp_ciphertext = None
        audit.append(
            uow,
            org_id,
            EventType.REGENERATION_FAILED,
            Outcome.FAILURE,
            ctx,
            user_id=user.external_id,
            details={
                "regeneration_id": reg.id,
                "reason": MfaNotEnrolled.slug,
                "sheet_deleted": rowcount(had_sheet) > 0,
            },
        )

    limits.clear(session, user)
    revoked = tokens.revoke_all_of_user(uow, org_id, user.external_id, ctx, "mfa.reset")
    audit.append(
        uow,
        org_id,
        EventType.MFA_RESET,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={
            "was_enrolled": was_enrolled,
            "codes_removed": removed,
            "regenerations_failed": len(pending),
            "tokens_revoked": revoked,
        },
    )
    session.flush()


def unlock(uow: UnitOfWork, org_id: str, user_external_id: str, ctx: audit.Context) -> None:
    """The help desk: clear the throttles and locks of both factors, nothing else."""
    session = uow.session
    user = uow.lock_user(accounts.get_user(session, org_id, user_external_id))
    cleared = limits.clear(session, user)
    repudiated = repudiation.repudiated_since_enrollment(uow, user)
    if repudiated is not None:
        # "This wasn't me" locked the authenticator until a reset, not an unlock.
        repudiation.lock_totp(uow, user, repudiated)
    audit.append(
        uow,
        org_id,
        EventType.LOCKOUT_CLEARED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"factors": cleared, **({"totp_still_locked": True} if repudiated else {})},
    )


# --- the user's own view -----------------------------------------------------------


@dataclass(frozen=True)
class CodeSet:
    """The user's current set of codes: how many are left, when it was made and last
    used (the newest spend), and its format: the symbols of its codes (12 for a set
    made before the check symbol, whose holder is invited to regenerate; 16 now)."""

    set_id: str
    remaining: int
    total: int
    low: bool
    generated_at: datetime
    last_used_at: datetime | None
    format: int


@dataclass(frozen=True)
class MfaStatus:
    """GET /v1/me/mfa: enrollment, policy, the current set (None when no active code)."""

    enrolled: bool
    enrolled_at: datetime | None
    backup_codes_enabled: bool
    backup_codes: CodeSet | None
    last_set_expired_unseen: bool
    limits: limits.Standing


def mfa_status(session: Session, services: Services, user: User) -> MfaStatus:
    org = accounts.get_org(session, user.org_id)
    enrollment = session.get(TotpEnrollment, user.id, populate_existing=True)
    confirmed_at = None if enrollment is None else enrollment.confirmed_at
    return MfaStatus(
        enrolled=confirmed_at is not None,
        enrolled_at=confirmed_at,
        backup_codes_enabled=org.backup_codes_enabled,
        backup_codes=_current_set(session, user),
        last_set_expired_unseen=_last_set_expired_unseen(session, user),
        limits=limits.status(session, user, utcnow(), services.limits),
    )


def _current_set(session: Session, user: User) -> CodeSet | None:
    active = list(
        session.execute(
            select(BackupCode)
            .where(BackupCode.user_id == user.id, BackupCode.deactivated_at.is_(None))
            .execution_options(populate_existing=True)
        ).scalars()
    )
    if not active:
        return None
    # Regeneration deactivates the old set with the insert of the new one, so the
    # active codes are one set; the newest generation wins should that ever break.
    newest = max(active, key=lambda c: c.generation)
    current = [c for c in active if c.set_id == newest.set_id]
    remaining = sum(1 for c in current if c.spent_at is None)
    spent = [c.spent_at for c in current if c.spent_at is not None]
    return CodeSet(
        set_id=newest.set_id,
        remaining=remaining,
        total=len(current),
        low=remaining <= LOW_WATERMARK,
        generated_at=min(c.created_at for c in current),
        last_used_at=max(spent) if spent else None,
        format=newest.symbols,
    )


def _last_set_expired_unseen(session: Session, user: User) -> bool:
    """True when the user's newest set (highest generation) came from a regeneration
    whose sheet expired before anyone fetched it (or that a revocation deleted
    unfetched): that set is deactivated, and only a regeneration helps."""
    newest = session.execute(
        select(BackupCode.set_id)
        .where(BackupCode.user_id == user.id)
        .order_by(BackupCode.generation.desc())
        .limit(1)
    ).scalar_one_or_none()
    if newest is None:
        return False
    status = session.execute(
        select(Regeneration.status)
        .where(Regeneration.user_id == user.id, Regeneration.set_id == newest)
        .limit(1)
    ).scalar_one_or_none()
    return status == RegenerationStatus.EXPIRED


def _count_codes(session: Session, user: User, *, unspent_only: bool) -> int:
    query = (
        select(func.count())
        .select_from(BackupCode)
        .where(BackupCode.user_id == user.id, BackupCode.deactivated_at.is_(None))
    )
    if unspent_only:
        query = query.where(BackupCode.spent_at.is_(None))
    return int(session.execute(query).scalar_one())
