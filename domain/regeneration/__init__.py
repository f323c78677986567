"""Use cases of the regeneration pipeline: request, status, process, retrieve once.

Intake (`request_regeneration`) writes the request, its outbox row and the audit
event in one transaction; the TOTP value waits encrypted in the row. The worker
(`process_regeneration`) does everything else in ONE transaction under the
user's row lock, judging the TOTP for the moment the request was accepted.

Refusals that must stay on record although the request fails (an audited
refusal, a counted failure) are raised as `error.committed()`: the unit of work
commits them first, then raises (infra.db.unit_of_work).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from domain import accounts, audit, limits, outbox
from domain import totp as otp
from domain.audit import types
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
from domain.sheets import store as sheet_store
from infra.services import Services

FINISHED = frozenset({"ready", "failed", "retrieved", "expired"})
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255
MISSING = "missing"  # process_regeneration's answer for an id that no longer exists

expire_sheets = sheet_store.expire_sheets


@dataclass(frozen=True)
class RequestOutcome:
    regeneration: Regeneration
    created: bool


# --- pure helpers -------------------------------------------------------------


def format_timestamp(moment: datetime) -> str:
    """RFC 3339, UTC, millisecond precision: 2026-11-28T09:14:03.120Z."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def to_dict(reg: Regeneration) -> dict[str, Any]:
    """API.md's Regeneration JSON."""
    path = f"/v1/me/backup-codes/regenerations/{reg.id}"
    return {
        "id": reg.id,
        "status": reg.status,
        "reason": reg.reason,
        "failure": reg.failure,
        "created_at": _ts(reg.created_at),
        "completed_at": _ts(reg.completed_at),
        "expires_at": _ts(reg.expires_at),
        "code_count": reg.code_count,
        "links": {"self": path, "sheet": f"{path}/sheet"},
    }


def body_fingerprint(key: str, totp: str) -> str:
    """Keyed SHA-256 (HMAC) of the canonical body. Keyed because a plain hash of a
    6-digit value is reversed by trying a million values: it would be clear text."""
    body = json.dumps({"totp": totp}, sort_keys=True, separators=(",", ":")).encode()
    derived = hashlib.sha256(b"mfa-backup-codes/idempotency-fingerprint\x00" + key.encode())
    return hmac.new(derived.digest(), body, hashlib.sha256).hexdigest()


def same_body(stored: str | None, keys: Sequence[str], totp: str) -> bool:
    """Compared under every configured key, so a key rotation does not turn a retry
    into 'idempotency-key-reused'."""
    if stored is None:
        return False
    return any(hmac.compare_digest(stored, body_fingerprint(k, totp)) for k in keys)


def check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            field="Idempotency-Key",
        )


# --- intake -------------------------------------------------------------------


def _refuse(session: Session, user: User, error: DomainError, ctx: audit.Context) -> DomainError:
    # A wrong input is the user's failure; a refusal by policy or state is a denial.
    outcome = types.FAILURE if isinstance(error, InvalidRequest) else types.DENIED
    return audit.refusal(
        session, user.org_id, user.external_id, types.REGENERATION_REFUSED, error, ctx, outcome
    )


def queue_regeneration(
    session: Session,
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
    outbox.enqueue(session, outbox.TASK_PROCESS_REGENERATION, {"regeneration_id": reg.id})
    audit.append(
        session,
        user.org_id,
        types.REGENERATION_REQUESTED,
        types.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"regeneration_id": reg.id, "reason": reason, "code_count": reg.code_count},
    )
    return reg


def request_regeneration(
    session: Session,
    services: Services,
    user: User,
    totp: object,
    idempotency_key: str | None,
    now: datetime,
    ctx: audit.Context,
) -> RequestOutcome:
    check_idempotency_key(idempotency_key)
    user = accounts.lock_user(session, user)  # serialises requests with the same key
    if not isinstance(totp, str) or not otp.is_well_formed(totp):
        malformed = InvalidRequest("totp must be a string of exactly 6 digits", field="totp")
        raise _refuse(session, user, malformed, ctx)
    org = accounts.get_org(session, user.org_id)
    if not org.backup_codes_enabled:
        raise _refuse(session, user, BackupCodesDisabled(), ctx)
    enrollment = session.get(TotpEnrollment, user.id)
    if enrollment is None or enrollment.confirmed_at is None:
        raise _refuse(session, user, MfaNotEnrolled(), ctx)
    try:
        limits.end_expired(session, user, limits.TOTP, now, ctx, services.limits)
        limits.check_totp(session, user, now, services.limits)
    except (TooManyAttempts, TotpLocked) as refused:
        raise _refuse(session, user, refused, ctx) from None

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
            raise _refuse(session, user, IdempotencyKeyReused(), ctx)
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
        raise _refuse(session, user, RegenerationPending(to_dict(pending)["links"]["self"]), ctx)

    reg = queue_regeneration(
        session,
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
    session: Session,
    services: Services,
    user: User,
    regeneration_id: str,
    kind: str,
    now: datetime,
    ctx: audit.Context,
) -> tuple[bytes, Regeneration]:
    """The sheet ("pdf" or "text"), exactly once; see domain.sheets.store."""
    return sheet_store.retrieve_sheet(session, services.box, user, regeneration_id, kind, now, ctx)


# --- the worker ---------------------------------------------------------------


def mark_started(session: Session, regeneration_id: str, now: datetime) -> bool:
    changed = session.execute(
        update(Regeneration)
        .where(Regeneration.id == regeneration_id, Regeneration.status == "queued")
        .values(status="processing", started_at=now)
        .execution_options(synchronize_session=False)
    )
    if sheet_store.rowcount(changed) != 1:
        return False
    reg = session.get(Regeneration, regeneration_id, populate_existing=True)
    user = session.get(User, reg.user_id) if reg is not None else None
    if reg is None or user is None:
        return False
    # How long it waited in the queue: for the security team and the latency metric.
    waited = max(0.0, (now - reg.accepted_at).total_seconds())
    _event(
        session,
        reg,
        user,
        types.REGENERATION_STARTED,
        types.SUCCESS,
        queued_seconds=round(waited, 3),
    )
    return True


def process_regeneration(
    session: Session, services: Services, regeneration_id: str, now: datetime
) -> str:
    """The worker's one transaction. Idempotent: a finished regeneration is left as
    it is and its status returned; an id that no longer exists answers MISSING."""
    first = session.get(Regeneration, regeneration_id)
    if first is None:
        return MISSING
    if first.status in FINISHED:
        return first.status
    owner = session.get(User, first.user_id)
    if owner is None:
        return MISSING
    user = accounts.lock_user(session, owner)
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
    failure = _judge(session, services, reg, user, org, now, ctx)
    if failure is not None:
        _fail(session, reg, user, failure, now, ctx)
    else:
        _issue(session, services, reg, user, org, now, ctx)
    return reg.status


def _judge(
    session: Session,
    services: Services,
    reg: Regeneration,
    user: User,
    org: Organization,
    now: datetime,
    ctx: audit.Context,
) -> str | None:
    """The failure slug, or None when the codes may be issued."""
    submitted, reg.totp_ciphertext = reg.totp_ciphertext, None  # wiped, whatever happens
    if not org.backup_codes_enabled:
        return BackupCodesDisabled.slug
    enrollment = session.get(TotpEnrollment, user.id, populate_existing=True)
    if enrollment is None or enrollment.confirmed_at is None:
        return MfaNotEnrolled.slug
    if reg.reason != "regeneration":
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
        limits.record_failure(session, user, limits.TOTP, None, now, ctx, services.limits)
        if judgement.verdict is otp.Verdict.REPLAYED:
            _event(session, reg, user, types.TOTP_REPLAYED, types.DENIED, ctx)
        else:
            _event(session, reg, user, types.TOTP_REJECTED, types.FAILURE, ctx)
        return str(judgement.verdict.value)
    enrollment.last_accepted_step = judgement.step
    enrollment.drift = judgement.drift
    limits.record_success(session, user, limits.TOTP, None, now)
    return None


PROCESSING_FAILED = "processing-failed"


def abandon(session: Session, regeneration_id: str, now: datetime) -> bool:
    """Fail a request the worker could not process however often it tried (an error
    that repeats), so it stops coming back and its TOTP value is wiped. False when
    it has finished meanwhile or no longer exists."""
    reg = session.get(Regeneration, regeneration_id)
    owner = session.get(User, reg.user_id) if reg is not None else None
    if reg is None or owner is None or reg.status in FINISHED:
        return False
    user = accounts.lock_user(session, owner)
    session.refresh(reg, with_for_update=True)
    if reg.status in FINISHED:
        return False
    reg.totp_ciphertext = None
    _fail(session, reg, user, PROCESSING_FAILED, now, audit.Context.from_dict(reg.actor))
    return True


def _fail(
    session: Session,
    reg: Regeneration,
    user: User,
    failure: str,
    now: datetime,
    ctx: audit.Context,
) -> None:
    reg.status = "failed"
    reg.failure = failure
    reg.completed_at = now
    _event(session, reg, user, types.REGENERATION_FAILED, types.FAILURE, ctx, reason=failure)


def _issue(
    session: Session,
    services: Services,
    reg: Regeneration,
    user: User,
    org: Organization,
    now: datetime,
    ctx: audit.Context,
) -> None:
    """Replace the user's codes and store the sheet: never both sets active, never
    neither, because it all commits or rolls back together."""
    set_id, deactivated, sheet = sheet_store.issue_set(session, services, reg, org, user, now)
    limits.new_set_issued(session, user)  # a new set ends a backup-code lock
    if deactivated:
        _event(session, reg, user, types.CODES_DEACTIVATED, types.SUCCESS, ctx, count=deactivated)
    reg.status = "ready"
    reg.set_id = set_id
    reg.completed_at = now
    reg.expires_at = sheet.expires_at
    _event(session, reg, user, types.SHEET_RENDERED, types.SUCCESS, ctx, set_id=set_id)
    _event(
        session,
        reg,
        user,
        types.REGENERATION_SUCCEEDED,
        types.SUCCESS,
        ctx,
        set_id=set_id,
        code_count=reg.code_count,
    )


def _event(
    session: Session,
    reg: Regeneration,
    user: User,
    type_: str,
    outcome: str,
    ctx: audit.Context | None = None,
    **details: object,
) -> None:
    """An event about this regeneration; the worker acts for whoever asked (reg.actor)."""
    audit.append(
        session,
        reg.org_id,
        type_,
        outcome,
        ctx or audit.Context.from_dict(reg.actor),
        user_id=user.external_id,
        details={"regeneration_id": reg.id, **details},
    )


def stale_regenerations(
    session: Session, now: datetime, older_than_seconds: int, limit: int = 500
) -> list[str]:
    """Queued or processing requests not dispatched for `older_than_seconds`: their
    dispatched_at is bumped (so a concurrent beat skips them) and their ids returned
    for republishing. PostgreSQL skips rows another beat holds; SQLite has one writer."""
    deadline = now - timedelta(seconds=older_than_seconds)
    stale = or_(Regeneration.dispatched_at.is_(None), Regeneration.dispatched_at < deadline)
    ids = list(
        session.execute(
            select(Regeneration.id)
            .where(Regeneration.status.in_(sheet_store.IN_PROGRESS), stale)
            .order_by(Regeneration.dispatched_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if ids:
        session.execute(
            update(Regeneration)
            .where(Regeneration.id.in_(ids))
            .values(dispatched_at=now, dispatch_count=Regeneration.dispatch_count + 1)
            .execution_options(synchronize_session=False)
        )
    return ids
