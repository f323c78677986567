"""Intake: a regeneration request is checked, recorded with its outbox row and
its audit event in one transaction, and answered at once; the TOTP value waits
encrypted in the row for the worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain import accounts, audit, limits, outbox
from domain import totp as otp
from domain.audit.types import EventType, Outcome
from domain.errors import (
    BackupCodesDisabled,
    DomainError,
    IdempotencyKeyReused,
    InvalidRequest,
    MfaNotEnrolled,
    RegenerationPending,
    TooManyAttempts,
    TotpLocked,
)
from domain.models import Organization, Regeneration, TotpEnrollment, User, new_id
from domain.ports import Services
from domain.regeneration.idempotency import (
    IDEMPOTENCY_WINDOW,
    body_fingerprint,
    check_idempotency_key,
    same_body,
)
from domain.sheets import store as sheet_store
from domain.uow import UnitOfWork


@dataclass(frozen=True)
class RequestOutcome:
    regeneration: Regeneration
    created: bool


def _refuse(uow: UnitOfWork, user: User, error: DomainError, ctx: audit.Context) -> DomainError:
    # A wrong input is the user's failure; a refusal by policy or state is a denial.
    outcome = Outcome.FAILURE if isinstance(error, InvalidRequest) else Outcome.DENIED
    return audit.refusal(
        uow, user.org_id, user.external_id, EventType.REGENERATION_REFUSED, error, ctx, outcome
    )


def queue_regeneration(
    uow: UnitOfWork,
    user: User,
    org: Organization,
    reason: str,
    totp_ciphertext: bytes | None,
    now: datetime,
    ctx: audit.Context,
    *,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> Regeneration:
    """Insert a queued regeneration, its outbox row and the 'requested' event."""
    session = uow.session
    reg = Regeneration(
        id=new_id(),
        org_id=user.org_id,
        user_id=user.id,
        reason=reason,
        status="queued",
        code_count=org.code_count,
        accepted_at=now,
        totp_ciphertext=totp_ciphertext,
        idempotency_key=idempotency_key,
        body_fingerprint=fingerprint,
        actor=ctx.as_dict(),
        created_at=now,
        dispatched_at=now,
        dispatch_count=1,
    )
    session.add(reg)
    session.flush()
    outbox.enqueue(uow, outbox.TASK_PROCESS_REGENERATION, {"regeneration_id": reg.id})
    audit.append(
        uow,
        user.org_id,
        EventType.REGENERATION_REQUESTED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"regeneration_id": reg.id, "reason": reason, "code_count": reg.code_count},
    )
    return reg


def request_regeneration(
    uow: UnitOfWork,
    services: Services,
    user: User,
    totp: object,
    idempotency_key: str | None,
    now: datetime,
    ctx: audit.Context,
) -> RequestOutcome:
    session = uow.session
    check_idempotency_key(idempotency_key)
    user = uow.lock_user(user)  # serialises requests with the same key
    if not isinstance(totp, str) or not otp.is_well_formed(totp):
        malformed = InvalidRequest("totp must be a string of exactly 6 digits", field="totp")
        raise _refuse(uow, user, malformed, ctx)
    org = accounts.get_org(session, user.org_id)
    if not org.backup_codes_enabled:
        raise _refuse(uow, user, BackupCodesDisabled(), ctx)
    enrollment = session.get(TotpEnrollment, user.id)
    if enrollment is None or enrollment.confirmed_at is None:
        raise _refuse(uow, user, MfaNotEnrolled(), ctx)
    try:
        limits.end_expired(uow, user, limits.TOTP, now, ctx, services.limits)
        limits.check_totp(session, user, now, services.limits)
    except (TooManyAttempts, TotpLocked) as refused:
        raise _refuse(uow, user, refused, ctx) from None

    keys = services.settings.secret_keys
    if idempotency_key is not None:
        earlier = session.execute(
            select(Regeneration).where(
                Regeneration.user_id == user.id, Regeneration.idempotency_key == idempotency_key
            )
        ).scalar_one_or_none()
        if earlier is not None and earlier.created_at > now - IDEMPOTENCY_WINDOW:
            if same_body(earlier.body_fingerprint, keys, totp):
                return RequestOutcome(earlier, created=False)
            raise _refuse(uow, user, IdempotencyKeyReused(), ctx)
        if earlier is not None:  # older than the window: the key is free again
            # A statement, not the ORM: the purge may have deleted that row meanwhile
            # (domain.purge), and an UPDATE of nothing is then just right.
            session.execute(
                update(Regeneration)
                .where(Regeneration.id == earlier.id)
                .values(idempotency_key=None, body_fingerprint=None)
                .execution_options(synchronize_session=False)
            )

    pending = _pending(session, user)
    if pending is not None:  # one at a time: a user cannot flood the shared queue
        raise _refuse(uow, user, RegenerationPending(pending.id), ctx)

    reg = queue_regeneration(
        uow,
        user,
        org,
        "regeneration",
        services.box.encrypt_text(totp),
        now,
        ctx,
        idempotency_key=idempotency_key,
        fingerprint=None if idempotency_key is None else body_fingerprint(keys[0], totp),
    )
    return RequestOutcome(reg, created=True)


def _pending(session: Session, user: User) -> Regeneration | None:
    return (
        session.execute(
            select(Regeneration)
            .where(
                Regeneration.user_id == user.id,
                Regeneration.status.in_(sheet_store.IN_PROGRESS),
            )
            .order_by(Regeneration.created_at)
            .limit(1)
        )
        .scalars()
        .first()
    )


def get_regeneration(session: Session, user: User, regeneration_id: str) -> Regeneration:
    return sheet_store.owned_regeneration(session, user, regeneration_id)


def retrieve_sheet(
    uow: UnitOfWork,
    services: Services,
    user: User,
    regeneration_id: str,
    kind: str,
    now: datetime,
    ctx: audit.Context,
) -> tuple[bytes, Regeneration]:
    """The sheet ("pdf" or "text"), exactly once; see domain.sheets.store."""
    return sheet_store.retrieve_sheet(uow, services.box, user, regeneration_id, kind, now, ctx)
