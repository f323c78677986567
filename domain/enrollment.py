"""TOTP enrollment: start (or restart) a pending enrollment, confirm it with a code.

Confirmation judges the code now (the user is present). When the organization
allows backup codes, it queues the first set through the regeneration pipeline
(reason "enrollment"; the TOTP was judged here, so none waits in the row).

A wrong code must be counted and audited although the request fails: the unit
of work commits it before the error is raised (`uow.commit_refusal`, through
audit.refusal). Other audited refusals work the same way.
"""

from __future__ import annotations

from datetime import datetime

from domain import accounts, audit, guards, limits, regeneration
from domain import totp as otp
from domain.audit.types import EventType, Outcome
from domain.clock import utcnow
from domain.errors import (
    AlreadyEnrolled,
    InvalidRequest,
    InvalidTotp,
    NoPendingEnrollment,
)
from domain.models import Regeneration, RegenerationReason, TotpEnrollment, User
from domain.ports import Services
from domain.uow import UnitOfWork

_REFUSED = EventType.ENROLLMENT_FAILED


def start_enrollment(
    uow: UnitOfWork, services: Services, user: User, ctx: audit.Context
) -> tuple[str, str]:
    """(base32 secret, otpauth URI). A pending enrollment is replaced by a new secret."""
    session = uow.session
    user = uow.lock_user(user)
    enrollment = session.get(TotpEnrollment, user.id, populate_existing=True)
    if enrollment is not None and enrollment.confirmed_at is not None:
        raise guards.refuse(uow, user, _REFUSED, AlreadyEnrolled(), ctx)
    secret = otp.new_secret()
    ciphertext = services.box.encrypt_text(secret)
    restarted = enrollment is not None
    if enrollment is None:
        session.add(TotpEnrollment(user_id=user.id, secret_ciphertext=ciphertext))
    else:
        enrollment.secret_ciphertext = ciphertext
        enrollment.last_accepted_step = None
        enrollment.drift = 0
        enrollment.created_at = utcnow()
    session.flush()
    audit.append(
        uow,
        user.org_id,
        EventType.ENROLLMENT_STARTED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"restarted": restarted},
    )
    account = user.email or user.external_id
    return secret, otp.provisioning_uri(secret, account, services.settings.totp_issuer)


def confirm_enrollment(
    uow: UnitOfWork,
    services: Services,
    user: User,
    totp: str,
    now: datetime,
    ctx: audit.Context,
) -> Regeneration | None:
    """Confirm with a code valid now; returns the first set's regeneration, or None
    when the organization has backup codes turned off."""
    session = uow.session
    user = uow.lock_user(user)
    if not otp.is_well_formed(totp):
        malformed = InvalidRequest("totp must be a string of exactly 6 digits", field="totp")
        raise guards.refuse(uow, user, _REFUSED, malformed, ctx)
    enrollment = session.get(TotpEnrollment, user.id, populate_existing=True)
    if enrollment is None or enrollment.confirmed_at is not None:
        raise guards.refuse(uow, user, _REFUSED, NoPendingEnrollment(), ctx)
    guards.require_totp_open(uow, user, _REFUSED, now, ctx, services.limits)
    judgement = otp.judge(
        services.box.decrypt_text(enrollment.secret_ciphertext),
        totp,
        now,
        enrollment.last_accepted_step,
    )
    if judgement.verdict is not otp.Verdict.ACCEPTED:
        limits.record_failure(uow, user, limits.TOTP, None, now, ctx, services.limits)
        # The same TOTP event the worker writes, so one filter finds every wrong code.
        audit.append(
            uow,
            user.org_id,
            EventType.TOTP_REJECTED,
            Outcome.FAILURE,
            ctx,
            user_id=user.external_id,
            details={"during": "enrollment"},
        )
        raise guards.refuse(uow, user, _REFUSED, InvalidTotp(), ctx)
    enrollment.confirmed_at = now
    enrollment.last_accepted_step = judgement.step
    enrollment.drift = judgement.drift
    limits.record_success(session, user, limits.TOTP, None, now)
    audit.append(
        uow,
        user.org_id,
        EventType.ENROLLMENT_CONFIRMED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
    )
    org = accounts.get_org(session, user.org_id)
    if not org.backup_codes_enabled:
        return None
    return regeneration.queue_regeneration(
        uow, user, org, RegenerationReason.ENROLLMENT, None, now, ctx
    )
