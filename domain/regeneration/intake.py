"""Intake: a regeneration request is checked, recorded with its outbox row and
its audit event in one transaction, and answered at once; the TOTP value waits
encrypted in the row for the worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain import audit, guards, outbox
from domain import totp as otp
from domain.audit.types import EventType, Outcome
from domain.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    RegenerationPending,
)
from domain.models import (
    IN_PROGRESS,
    Organization,
    Regeneration,
    RegenerationReason,
    RegenerationStatus,
    User,
    new_id,
)
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


_REFUSED = EventType.REGENERATION_REFUSED


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
        status=RegenerationStatus.QUEUED,
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
    totp: str,
    idempotency_key: str | None,
    now: datetime,
    ctx: audit.Context,
) -> RequestOutcome:
    session = uow.session
    check_idempotency_key(idempotency_key)
    user = uow.lock_user(user)  # serialises requests with the same key
    if not otp.is_well_formed(totp):
        malformed = InvalidRequest("totp must be a string of exactly 6 digits", field="totp")
        raise guards.refuse(uow, user, _REFUSED, malformed, ctx)
    org = guards.require_usable(uow, user, _REFUSED, ctx)
    guards.require_totp_open(uow, user, _REFUSED, now, ctx, services.limits)

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
            raise guards.refuse(uow, user, _REFUSED, IdempotencyKeyReused(), ctx)
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
        raise guards.refuse(uow, user, _REFUSED, RegenerationPending(pending.id), ctx)

    reg = queue_regeneration(
        uow,
        user,
        org,
        RegenerationReason.REGENERATION,
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
                Regeneration.status.in_(IN_PROGRESS),
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


def retrieve_sheet_forms(
    uow: UnitOfWork,
    services: Services,
    user: User,
    regeneration_id: str,
    kind: str,
    now: datetime,
    ctx: audit.Context,
) -> sheet_store.RetrievedSheet:
    """Both forms of the sheet at once (a page's "json" retrieval), exactly once."""
    return sheet_store.retrieve_sheet_forms(
        uow, services.box, user, regeneration_id, kind, now, ctx
    )
