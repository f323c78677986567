"""Re-encrypt every secret at rest under the newest key.

Operators put the new key first in MFA_SECRET_KEY (`new,old`), restart, run
`mfa-codes keys rotate`, then drop the old key. Batches keep transactions short:
each is a unit of work from the caller's factory; the last one also records, on
every organization's chain, that its secrets now depend on the newest key only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.crypto import SecretBox
from domain.models import Organization, Regeneration, Sheet, TotpEnrollment
from domain.uow import UnitOfWork, UnitOfWorkFactory


@dataclass(frozen=True)
class _Encrypted:
    model: Any
    key: str
    columns: tuple[str, ...]


TARGETS = (
    _Encrypted(TotpEnrollment, "user_id", ("secret_ciphertext",)),
    _Encrypted(Regeneration, "id", ("totp_ciphertext",)),
    _Encrypted(Sheet, "regeneration_id", ("pdf_ciphertext", "text_ciphertext")),
)


def rotate_all(
    unit_of_work: UnitOfWorkFactory,
    box: SecretBox,
    ctx: audit.Context,
    *,
    keys_configured: int,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Returns the number of values re-encrypted."""
    total = 0
    for target in TARGETS:
        after = ""
        while True:
            with unit_of_work() as uow:
                done, after = _rotate_batch(uow.session, box, target, after, batch)
                if not after and target is TARGETS[-1]:
                    _record_rekeyed(uow, ctx, keys_configured)
            total += done
            if progress:
                progress(done)
            if not after:
                break
    return total


def _record_rekeyed(uow: UnitOfWork, ctx: audit.Context, keys_configured: int) -> None:
    orgs = uow.session.scalars(select(Organization.id).order_by(Organization.id)).all()
    for org_id in orgs:
        audit.append(
            uow,
            org_id,
            EventType.SECRETS_REKEYED,
            Outcome.SUCCESS,
            ctx,
            details={"keys_configured": keys_configured},
        )


def _rotate_batch(
    session: Session, box: SecretBox, target: _Encrypted, after: str, batch: int
) -> tuple[int, str]:
    key = getattr(target.model, target.key)
    rows = session.execute(
        select(target.model).where(key > after).order_by(key).limit(batch).with_for_update()
    ).scalars()
    seen, last, rotated = 0, "", 0
    for row in rows:
        seen, last = seen + 1, getattr(row, target.key)
        for column in target.columns:
            value = getattr(row, column)
            if value is not None:  # a judged request's TOTP is already wiped
                setattr(row, column, box.rotate(value))
                rotated += 1
    return rotated, last if seen == batch else ""
