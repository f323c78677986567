"""The stored sheet: encrypted between rendering and its one retrieval or expiry.

`issue_set` is the worker's write: it replaces the user's codes with a new set
of argon2id hashes and stores the rendered sheet, in the caller's transaction.

Retrieval is exactly once on PostgreSQL and SQLite alike: the request claims the
regeneration with a conditional UPDATE (status 'ready' -> 'retrieved'); only the
transaction whose UPDATE changed the row reads the sheet, and it deletes it. A
concurrent claim waits for the row (PostgreSQL re-checks the WHERE after the
winner commits; SQLite runs one writer at a time) and finds nothing to claim.

Public entry points are re-exported by domain.regeneration.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from domain import audit, guards
from domain.audit.types import EventType, Outcome
from domain.crypto import SecretBox
from domain.errors import (
    DomainError,
    InvalidRequest,
    NotFound,
    NotReady,
    RegenerationFailed,
    SheetExpired,
    SheetGone,
)
from domain.models import (
    IN_PROGRESS,
    BackupCode,
    Organization,
    Regeneration,
    RegenerationStatus,
    Sheet,
    User,
)
from domain.ports import Services
from domain.sheets.render import SheetContent, render_pdf, render_text
from domain.sql import rowcount
from domain.uow import UnitOfWork

# What a retrieval asks for: the PDF, the text form, or both at once ("json", a page's
# one retrieval for copy, download and print). Recorded as the audit event's format.
KINDS = ("pdf", "text", "json")
UNSEEN_EXPIRY = SheetExpired.slug  # why an expiry deactivated a set (audit details)


def owned_regeneration(session: Session, user: User, regeneration_id: str) -> Regeneration:
    """The user's regeneration, fresh from the database; NotFound for anything else,
    malformed ids included, never a hint that it exists for someone else."""
    try:
        uuid.UUID(regeneration_id)
    except (ValueError, TypeError, AttributeError):
        raise NotFound("no such regeneration") from None
    reg = session.execute(
        select(Regeneration)
        .where(Regeneration.id == regeneration_id, Regeneration.user_id == user.id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if reg is None:
        raise NotFound("no such regeneration")
    return reg


def store_sheet(
    session: Session,
    box: SecretBox,
    regeneration_id: str,
    pdf: bytes,
    text: str,
    now: datetime,
    ttl_seconds: int,
) -> Sheet:
    sheet = Sheet(
        regeneration_id=regeneration_id,
        pdf_ciphertext=box.encrypt(pdf),
        text_ciphertext=box.encrypt_text(text),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    session.add(sheet)
    return sheet


def change_status(
    session: Session,
    regeneration_id: str,
    old: RegenerationStatus,
    new: RegenerationStatus,
    *conditions: ColumnElement[bool],
    **values: object,
) -> bool:
    """Move a regeneration from `old` to `new` (and set `values`) only while it still is
    `old`: True for the one caller whose UPDATE changed the row, so of a retrieval, a
    sweep and a redelivery racing for it exactly one goes on."""
    changed = session.execute(
        update(Regeneration)
        .where(Regeneration.id == regeneration_id, Regeneration.status == old, *conditions)
        .values(status=new, **values)
        .execution_options(synchronize_session=False)
    )
    return rowcount(changed) == 1


@dataclass(frozen=True)
class RetrievedSheet:
    """Both forms of a sheet that was just claimed; out of repr, so no log shows them."""

    regeneration: Regeneration
    pdf: bytes = field(repr=False)
    text: str = field(repr=False)

    @property
    def codes(self) -> list[str]:
        return self.text.splitlines()


def retrieve_sheet(
    uow: UnitOfWork,
    box: SecretBox,
    user: User,
    regeneration_id: str,
    kind: str,
    now: datetime,
    ctx: audit.Context,
) -> tuple[bytes, Regeneration]:
    """One form of the sheet ("pdf" or "text"), exactly once."""
    if kind not in ("pdf", "text"):
        raise InvalidRequest("the sheet comes as pdf or text", field="kind")
    got = retrieve_sheet_forms(uow, box, user, regeneration_id, kind, now, ctx)
    return (got.pdf if kind == "pdf" else got.text.encode()), got.regeneration


def retrieve_sheet_forms(
    uow: UnitOfWork,
    box: SecretBox,
    user: User,
    regeneration_id: str,
    kind: str,
    now: datetime,
    ctx: audit.Context,
) -> RetrievedSheet:
    """The sheet, exactly once, whatever `kind` was asked for: the first claim of any
    kind ends retrieval for every kind."""
    session = uow.session
    if kind not in KINDS:
        raise InvalidRequest("the sheet comes as pdf, text or json", field="kind")
    reg = owned_regeneration(session, user, regeneration_id)
    claimed = change_status(
        session,
        reg.id,
        RegenerationStatus.READY,
        RegenerationStatus.RETRIEVED,
        Regeneration.expires_at > now,
        retrieved_at=now,
    )
    reg = owned_regeneration(session, user, regeneration_id)  # what the claim left
    if not claimed:
        raise _refuse_retrieval(uow, user, reg, kind, now, ctx)
    sheet = session.get(Sheet, reg.id, populate_existing=True)
    if sheet is None:  # cannot happen while status and sheet change together
        reg.status = RegenerationStatus.EXPIRED
        raise _refused(uow, user, reg, kind, ctx, SheetExpired())
    got = RetrievedSheet(
        regeneration=reg,
        pdf=box.decrypt(sheet.pdf_ciphertext),
        text=box.decrypt_text(sheet.text_ciphertext),
    )
    session.delete(sheet)
    session.flush()
    audit.append(
        uow,
        reg.org_id,
        EventType.SHEET_RETRIEVED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"regeneration_id": reg.id, "format": kind},
    )
    return got


def _refuse_retrieval(
    uow: UnitOfWork,
    user: User,
    reg: Regeneration,
    kind: str,
    now: datetime,
    ctx: audit.Context,
) -> DomainError:
    error: DomainError
    if reg.status in IN_PROGRESS:
        error = NotReady(retry_after=1)
    elif reg.status == RegenerationStatus.FAILED:
        error = RegenerationFailed(f"The regeneration failed: {reg.failure}", failure=reg.failure)
    elif reg.status == RegenerationStatus.RETRIEVED:
        error = SheetGone()
    else:  # expired, or ready but past expires_at: expire it now
        if reg.status == RegenerationStatus.READY:
            _expire(uow, reg, ctx, user.external_id, now)  # noticed by this request
        error = SheetExpired()
    return _refused(uow, user, reg, kind, ctx, error)


def _refused(
    uow: UnitOfWork,
    user: User,
    reg: Regeneration,
    kind: str,
    ctx: audit.Context,
    error: DomainError,
) -> DomainError:
    return guards.refuse(
        uow,
        user,
        EventType.SHEET_RETRIEVAL_REFUSED,
        error,
        ctx,
        regeneration_id=reg.id,
        format=kind,
    )


def _expire(
    uow: UnitOfWork, reg: Regeneration, ctx: audit.Context, external_id: str, now: datetime
) -> bool:
    """ready -> expired, the sheet deleted and the set it printed deactivated: nobody
    saw those codes, so none of them may sign in. False when someone else got there
    first (a retrieval, another sweep)."""
    session = uow.session
    if not change_status(session, reg.id, RegenerationStatus.READY, RegenerationStatus.EXPIRED):
        return False
    session.execute(delete(Sheet).where(Sheet.regeneration_id == reg.id))
    reg.status = RegenerationStatus.EXPIRED
    audit.append(
        uow,
        reg.org_id,
        EventType.SHEET_EXPIRED,
        Outcome.SUCCESS,
        ctx,
        user_id=external_id,
        details={"regeneration_id": reg.id},
    )
    deactivated = rowcount(
        session.execute(
            update(BackupCode)
            .where(
                BackupCode.user_id == reg.user_id,
                BackupCode.set_id == reg.set_id,
                BackupCode.deactivated_at.is_(None),
            )
            .values(deactivated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    if deactivated:  # none when a revocation or a newer set deactivated them already
        audit.append(
            uow,
            reg.org_id,
            EventType.CODES_DEACTIVATED,
            Outcome.SUCCESS,
            ctx,
            user_id=external_id,
            details={"regeneration_id": reg.id, "count": deactivated, "reason": UNSEEN_EXPIRY},
        )
    return True


def expire_sheets(uow: UnitOfWork, now: datetime, limit: int = 500) -> int:
    """Ready regenerations past expires_at become 'expired', lose their sheet and
    their set (see _expire)."""
    session = uow.session
    rows = session.execute(
        select(Regeneration, User.external_id)
        .join(User, User.id == Regeneration.user_id)
        .where(Regeneration.status == RegenerationStatus.READY, Regeneration.expires_at <= now)
        .order_by(Regeneration.expires_at)
        .limit(limit)
    ).all()
    return sum(1 for reg, external_id in rows if _expire(uow, reg, audit.SYSTEM, external_id, now))


def expire_unfetched(uow: UnitOfWork, user: User, now: datetime, ctx: audit.Context) -> int:
    """Expire every sheet of the user not yet retrieved (an administrator's revocation:
    nobody may receive a sheet of dead codes); the caller holds the user's lock."""
    session = uow.session
    ready = session.execute(
        select(Regeneration)
        .where(Regeneration.user_id == user.id, Regeneration.status == RegenerationStatus.READY)
        .order_by(Regeneration.completed_at)
    ).scalars()
    return sum(1 for reg in list(ready) if _expire(uow, reg, ctx, user.external_id, now))


def render_and_store(
    session: Session,
    services: Services,
    reg: Regeneration,
    org: Organization,
    user: User,
    set_id: str,
    codes: list[str],
    now: datetime,
) -> Sheet:
    """Render the PDF and the text form of freshly generated codes and store both
    encrypted; the plaintext exists only in this call."""
    content = SheetContent(
        organization=org.id,
        account=user.email or user.external_id,
        set_id=set_id,
        generated_at=now.astimezone(UTC),
        codes=tuple(codes),
    )
    return store_sheet(
        session,
        services.box,
        reg.id,
        render_pdf(content),
        render_text(content),
        now,
        services.settings.sheet_ttl_seconds,
    )
