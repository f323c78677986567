"""A user's code set replaced: every earlier code deactivated and the new set's
argon2id hashes inserted in the caller's transaction, so there is never a moment
with both sets active, nor one with neither."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from domain.codes import generate_codes, new_set_id
from domain.models import BackupCode, Organization, Regeneration, Sheet, User
from domain.ports import Services
from domain.sheets.store import render_and_store
from domain.sql import rowcount


def issue_set(
    session: Session,
    services: Services,
    reg: Regeneration,
    org: Organization,
    user: User,
    now: datetime,
) -> tuple[str, int, Sheet]:
    """Deactivate every code of the user (spent ones too), insert a new set of
    argon2id hashes and store its sheet: (set_id, codes deactivated, sheet). The
    caller's transaction makes it all-or-nothing: never both sets, never neither."""
    deactivated = rowcount(
        session.execute(
            update(BackupCode)
            .where(BackupCode.user_id == user.id, BackupCode.deactivated_at.is_(None))
            .values(deactivated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    codes = generate_codes(reg.code_count)
    hashes = services.hasher.hash_all(codes)
    previous = session.execute(
        select(func.max(BackupCode.generation)).where(BackupCode.user_id == user.id)
    ).scalar()
    set_id = new_set_id()
    session.add_all(
        BackupCode(
            user_id=user.id,
            set_id=set_id,
            generation=(previous or 0) + 1,
            position=code.position,
            locator=code.locator,
            symbols=code.symbols,
            hash=hashed,
            created_at=now,
        )
        for code, hashed in zip(codes, hashes, strict=True)
    )
    sheet = render_and_store(
        session, services, reg, org, user, set_id, [c.display for c in codes], now
    )
    return set_id, deactivated, sheet
