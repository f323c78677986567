"""Re-encrypt every secret at rest under the newest key.

Operators put the new key first in MFA_SECRET_KEY (`new,old`), restart, run
`mfa-codes keys rotate`, then drop the old key. Batches keep transactions short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from domain.crypto import SecretBox
from domain.models import Regeneration, Sheet, TotpEnrollment


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
    sessions: sessionmaker[Session],
    box: SecretBox,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Returns the number of values re-encrypted."""
    total = 0
    for target in TARGETS:
        after = ""
        while True:
            with sessions() as session, session.begin():
                done, after = _rotate_batch(session, box, target, after, batch)
            total += done
            if progress:
                progress(done)
            if not after:
                break
    return total


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
