"""The budget of mistyped inputs (what cannot be a code, domain.codes.normalise):
never a failure, `mistyped_threshold` in `mistyped_window_seconds` per source across
the users of the organization (a scatter of random inputs over many users spends
one budget), audited once a minute per source with how many came since the last
event (`backup_codes.code.rejected`, reason `mistyped`).

What the budget needs is read beside sign-in's other early reads (`columns`, in the
same statement), so a mistyped input costs that one read and one INSERT, plus the
audit event once a minute per source. No row lock: nothing here is the user's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, delete, func, insert, or_, select
from sqlalchemy.orm import aliased

from domain import audit, sql
from domain.audit.types import EventType, Outcome
from domain.errors import TooManyAttempts
from domain.limits import KEEP_ROWS, KIND_MISTYPED, Limits, wait_after
from domain.models import AuthFailure, User
from domain.uow import UnitOfWork

AUDIT_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Seen:
    """The source's mistyped inputs so far, as read before this one."""

    nth: datetime | None  # the threshold-th most recent in the window: over budget
    last_audited: datetime | None
    since: int  # kept rows after the last audited one


_MEMBER = aliased(User)  # never the enclosing query's user row
_RECENT, _MARKED, _KEPT = aliased(AuthFailure), aliased(AuthFailure), aliased(AuthFailure)


def _mine(row: Any, org_id: Any, source: Any) -> tuple[ColumnElement[bool], ...]:
    return (
        row.user_id.in_(select(_MEMBER.id).where(_MEMBER.org_id == org_id)),
        row.kind == KIND_MISTYPED,
        row.source == source,
    )


_FAILURES: Table = AuthFailure.__table__  # type: ignore[assignment]
# Built once, at import (one thread): what each input sends is bound parameters.
_INSERT = insert(_FAILURES)
_PRUNE = delete(AuthFailure).where(
    *_mine(AuthFailure, bindparam("org_id"), bindparam("source")),
    AuthFailure.occurred_at < bindparam("before"),
)


def columns(
    org_id: Any, source: Any, window_after: Any, keep_after: Any, threshold: int
) -> tuple[Any, ...]:
    """Three scalar subqueries for a SELECT of the caller's (the values may be bound
    parameters: `window_after` is now less the budget's window, `keep_after` now less
    KEEP_ROWS); give what they answer to seen_from."""
    nth = (
        select(_RECENT.occurred_at)
        .where(*_mine(_RECENT, org_id, source), _RECENT.occurred_at > window_after)
        .order_by(_RECENT.occurred_at.desc())
        .offset(threshold - 1)
        .limit(1)
        .scalar_subquery()
    )
    last_audited = (
        select(func.max(_MARKED.occurred_at))
        .where(*_mine(_MARKED, org_id, source), _MARKED.audited.is_(True))
        .scalar_subquery()
    )
    since = (
        select(func.count())
        .select_from(_KEPT)
        .where(
            *_mine(_KEPT, org_id, source),
            _KEPT.occurred_at >= keep_after,
            or_(last_audited.is_(None), _KEPT.occurred_at > last_audited),
        )
        .scalar_subquery()
    )
    return nth, last_audited, since


def seen_from(values: Sequence[Any]) -> Seen:
    nth, last_audited, since = values
    return Seen(nth, last_audited, int(since or 0))


def note(
    uow: UnitOfWork,
    user: User,
    source: str,
    now: datetime,
    ctx: audit.Context,
    rules: Limits,
    details: dict[str, Any],
    seen: Seen,
) -> None:
    """Count a mistyped input (TooManyAttempts beyond the budget, nothing written), and
    audit the batch when the source's last event is a minute old or there is none."""
    window = timedelta(seconds=rules.mistyped_window_seconds)
    over = wait_after(seen.nth, window, now)
    if over is not None:
        raise TooManyAttempts(over)
    due = seen.last_audited is None or now - seen.last_audited >= AUDIT_EVERY
    conn = uow.session.connection()
    sql.run(
        conn,
        _INSERT,
        {
            "user_id": user.id,
            "kind": KIND_MISTYPED,
            "source": source,
            "audited": due,
            "occurred_at": now,
        },
    )
    if not due:
        return
    # Old rows go with the batch's event: once a minute per source is often enough.
    sql.run(conn, _PRUNE, {"org_id": user.org_id, "source": source, "before": now - KEEP_ROWS})
    audit.append(
        uow,
        user.org_id,
        EventType.CODE_REJECTED,
        Outcome.FAILURE,
        ctx,
        user_id=user.external_id,
        details={**details, "reason": "mistyped", "count": seen.since + 1},
    )
