"""The beat's side: requests that stayed queued too long are dispatched again (a
lost message delays a request, never loses it); sheets past their time expire."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from domain.models import IN_PROGRESS, Regeneration
from domain.sheets import store as sheet_store


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
            .where(Regeneration.status.in_(IN_PROGRESS), stale)
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


expire_sheets = sheet_store.expire_sheets
