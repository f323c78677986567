"""The worker's side: one transaction under the user's row lock judges the TOTP for
the moment the request was accepted, replaces the codes and stores the sheet.
Idempotent: a redelivered message for a finished request changes nothing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from domain import accounts, audit, guards, limits
from domain import totp as otp
from domain.audit.types import EventType, Outcome
from domain.errors import (
    BackupCodesDisabled,
    MfaNotEnrolled,
    NotFound,
)
from domain.models import (
    FINISHED,
    Organization,
    Regeneration,
    RegenerationReason,
    RegenerationStatus,
    User,
)
from domain.ports import Services
from domain.regeneration import code_sets
from domain.sheets import store as sheet_store
from domain.uow import UnitOfWork

MISSING = "missing"  # process_regeneration's answer for an id that no longer exists


def mark_started(uow: UnitOfWork, regeneration_id: str, now: datetime) -> bool:
    session = uow.session
    queued, processing = RegenerationStatus.QUEUED, RegenerationStatus.PROCESSING
    if not sheet_store.change_status(session, regeneration_id, queued, processing, started_at=now):
        return False
    reg = session.get(Regeneration, regeneration_id, populate_existing=True)
    user = session.get(User, reg.user_id) if reg is not None else None
    if reg is None or user is None:
        return False
    # How long it waited in the queue: for the security team and the latency metric.
    waited = max(0.0, (now - reg.accepted_at).total_seconds())
    _event(
        uow,
        reg,
        user,
        EventType.REGENERATION_STARTED,
        Outcome.SUCCESS,
        queued_seconds=round(waited, 3),
    )
    return True


def process_regeneration(
    uow: UnitOfWork, services: Services, regeneration_id: str, now: datetime
) -> str:
    """The worker's one transaction. Idempotent: a finished regeneration is left as
    it is and its status returned; an id that no longer exists answers MISSING."""
    session = uow.session
    first = session.get(Regeneration, regeneration_id)
    if first is None:
        return MISSING
    if first.status in FINISHED:
        return first.status
    owner = session.get(User, first.user_id)
    if owner is None:
        return MISSING
    try:
        user = uow.lock_user(owner)
    except NotFound:
        return MISSING  # the user was deleted while this waited for the lock
    # Re-read under the lock: a concurrent delivery may have finished it meanwhile.
    reg = session.execute(
        select(Regeneration)
        .where(Regeneration.id == regeneration_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if reg is None:
        return MISSING
    if reg.status in FINISHED:
        return reg.status
    if reg.started_at is None:
        reg.started_at = now
    ctx = audit.Context.from_dict(reg.actor)
    org = accounts.get_org(session, reg.org_id)
    failure = _judge(uow, services, reg, user, org, now, ctx)
    if failure is not None:
        _fail(uow, reg, user, failure, now, ctx)
    else:
        _issue(uow, services, reg, user, org, now, ctx)
    return reg.status


def _judge(
    uow: UnitOfWork,
    services: Services,
    reg: Regeneration,
    user: User,
    org: Organization,
    now: datetime,
    ctx: audit.Context,
) -> str | None:
    """The failure slug, or None when the codes may be issued."""
    session = uow.session
    submitted, reg.totp_ciphertext = reg.totp_ciphertext, None  # wiped, whatever happens
    try:
        enrollment = guards.confirmed_enrollment(session, user, org)
    except (BackupCodesDisabled, MfaNotEnrolled) as refused:
        return refused.slug
    if reg.reason != RegenerationReason.REGENERATION:
        return None  # enrollment: the TOTP was judged when the enrollment was confirmed
    # Judged on its own merits: intake checked the TOTP limits at accepted_at, and a
    # throttle or lock that began since (an attacker's failures) does not fail it.
    if submitted is None:
        return str(otp.Verdict.INVALID.value)
    judgement = otp.judge(
        services.box.decrypt_text(enrollment.secret_ciphertext),
        services.box.decrypt_text(submitted),
        reg.accepted_at,
        enrollment.last_accepted_step,
    )
    if judgement.verdict is not otp.Verdict.ACCEPTED:
        # A replayed step is a failure too: else resubmitting the current, used
        # code queues regenerations without end.
        limits.record_failure(uow, user, limits.TOTP, None, now, ctx, services.limits)
        if judgement.verdict is otp.Verdict.REPLAYED:
            _event(uow, reg, user, EventType.TOTP_REPLAYED, Outcome.DENIED, ctx)
        else:
            _event(uow, reg, user, EventType.TOTP_REJECTED, Outcome.FAILURE, ctx)
        return str(judgement.verdict.value)
    enrollment.last_accepted_step = judgement.step
    enrollment.drift = judgement.drift
    limits.record_success(session, user, limits.TOTP, None, now)
    return None


PROCESSING_FAILED = "processing-failed"


def abandon(uow: UnitOfWork, regeneration_id: str, now: datetime) -> bool:
    """Fail a request the worker could not process however often it tried (an error
    that repeats), so it stops coming back and its TOTP value is wiped. False when
    it has finished meanwhile or no longer exists."""
    session = uow.session
    reg = session.get(Regeneration, regeneration_id)
    owner = session.get(User, reg.user_id) if reg is not None else None
    if reg is None or owner is None or reg.status in FINISHED:
        return False
    try:
        user = uow.lock_user(owner)
    except NotFound:
        return False  # the user (and so this request) was deleted meanwhile
    found = session.execute(
        select(Regeneration)
        .where(Regeneration.id == regeneration_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if found is None or found.status in FINISHED:
        return False
    reg = found
    reg.totp_ciphertext = None
    _fail(uow, reg, user, PROCESSING_FAILED, now, audit.Context.from_dict(reg.actor))
    return True


def _fail(
    uow: UnitOfWork,
    reg: Regeneration,
    user: User,
    failure: str,
    now: datetime,
    ctx: audit.Context,
) -> None:
    reg.status = RegenerationStatus.FAILED
    reg.failure = failure
    reg.completed_at = now
    _event(uow, reg, user, EventType.REGENERATION_FAILED, Outcome.FAILURE, ctx, reason=failure)


def _issue(
    uow: UnitOfWork,
    services: Services,
    reg: Regeneration,
    user: User,
    org: Organization,
    now: datetime,
    ctx: audit.Context,
) -> None:
    """Replace the user's codes and store the sheet: never both sets active, never
    neither, because it all commits or rolls back together."""
    session = uow.session
    set_id, deactivated, sheet = code_sets.issue_set(session, services, reg, org, user, now)
    limits.new_set_issued(session, user)  # a new set ends a backup-code lock
    if deactivated:
        _event(uow, reg, user, EventType.CODES_DEACTIVATED, Outcome.SUCCESS, ctx, count=deactivated)
    reg.status = RegenerationStatus.READY
    reg.set_id = set_id
    reg.completed_at = now
    reg.expires_at = sheet.expires_at
    _event(uow, reg, user, EventType.SHEET_RENDERED, Outcome.SUCCESS, ctx, set_id=set_id)
    _event(
        uow,
        reg,
        user,
        EventType.REGENERATION_SUCCEEDED,
        Outcome.SUCCESS,
        ctx,
        set_id=set_id,
        code_count=reg.code_count,
    )


def _event(
    uow: UnitOfWork,
    reg: Regeneration,
    user: User,
    type_: str,
    outcome: str,
    ctx: audit.Context | None = None,
    **details: object,
) -> None:
    """An event about this regeneration; the worker acts for whoever asked (reg.actor)."""
    audit.append(
        uow,
        reg.org_id,
        type_,
        outcome,
        ctx or audit.Context.from_dict(reg.actor),
        user_id=user.external_id,
        details={"regeneration_id": reg.id, **details},
    )
