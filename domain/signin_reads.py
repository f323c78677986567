"""What sign-in reads: one statement before the hash, one under the user's lock.

Before the hash (no lock): the user with its organization's policy, its enrollment,
its backup-code attempt limits and this source's sliding count, the one candidate
row for the input's locator, and what a mistyped input needs (the older format
held, the codes remaining, the mistyped budget). Under the lock, after the hash:
the attempt limits and the sliding count again (the verdict that counts), the codes
remaining, the user's oldest failure row and whether this source has any. Plain
columns only (the user's become a transient User, never loaded by the ORM); each
statement is built once per shape and rules, with bound parameters, and run through
domain.sql.run: building SQLAlchemy statements, and executing them through the
Core, cost more than the round trip here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, wraps
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Executable, ScalarSelect, bindparam, exists, func, select
from sqlalchemy.orm import Session, aliased

from domain import limits, mistyped, sql
from domain.codes import LEGACY_CODE_LENGTH, LOCATOR_LENGTH
from domain.models import AttemptLimit, AuthFailure, BackupCode, Organization, TotpEnrollment, User

_CODE, _COUNTED, _LEGACY = aliased(BackupCode), aliased(BackupCode), aliased(BackupCode)

F = TypeVar("F", bound=Callable[..., Executable])
_BUILDING = threading.Lock()


def _built_once(build: F) -> F:
    """`build`, cached, and never run by two threads at once: SQLAlchemy fills an
    aliased entity's column adapters on first use, and two threads building over the
    same aliases at once can make a wrong statement (seen: a cartesian product in the
    mistyped budget's count, so 429s long before the budget), which the cache would
    then keep for the process's life."""
    cached = cache(build)

    @wraps(build)
    def once(*args: Any) -> Executable:
        with _BUILDING:
            return cached(*args)

    return once  # type: ignore[return-value]


# The statements' shapes: what the input may be.
_MISTYPED, _CURRENT, _OLDER = "mistyped", "current", "older"


@dataclass(frozen=True)
class Candidate:
    """The current set's code with the input's locator and format."""

    id: str
    set_id: str
    hash: str
    spent: bool


@dataclass(frozen=True)
class BeforeHash:
    user: User
    backup_codes_enabled: bool
    enrolled: bool  # a confirmed TOTP enrollment
    standing: limits.BackupStanding
    candidate: Candidate | None
    format_held: bool  # False: 12 symbols, and the user holds no active code of that format
    remaining: int | None  # read only when the input may be mistyped
    mistyped: mistyped.Seen | None  # likewise


@dataclass(frozen=True)
class UnderLock:
    standing: limits.BackupStanding
    remaining: int
    oldest_failure: datetime | None
    source_failed: bool  # a backup-code failure of this source is on record (any age)


def _limits_join() -> ColumnElement[bool]:
    return (AttemptLimit.user_id == User.id) & (AttemptLimit.factor == limits.BACKUP_CODES)


def _source_nth(rules: limits.Limits) -> ScalarSelect[datetime]:
    return limits.sliding_nth(
        User.id,
        limits.KIND_BACKUP,
        bindparam("source"),
        bindparam("backup_after"),
        rules.threshold,
    ).correlate(User)


def _remaining() -> ScalarSelect[int]:
    return (
        select(func.count())
        .select_from(_COUNTED)
        .where(
            _COUNTED.user_id == User.id,
            _COUNTED.spent_at.is_(None),
            _COUNTED.deactivated_at.is_(None),
        )
        .correlate(User)
        .scalar_subquery()
    )


# The user's columns, not its entity: an ORM load costs more than the statement here.
_USER_COLUMNS = tuple(User.__table__.columns)


@_built_once
def _before_hash_statement(shape: str, rules: limits.Limits) -> Executable:
    query = (
        select(
            *_USER_COLUMNS,
            Organization.backup_codes_enabled,
            TotpEnrollment.confirmed_at,
            *limits.STATE_COLUMNS,
            _source_nth(rules),
        )
        .join(Organization, Organization.id == User.org_id)
        .outerjoin(TotpEnrollment, TotpEnrollment.user_id == User.id)
        .outerjoin(AttemptLimit, _limits_join())
        .where(User.org_id == bindparam("org_id"), User.external_id == bindparam("external_id"))
    )
    if shape != _MISTYPED:
        pick = (
            select(BackupCode.id)
            .where(
                BackupCode.user_id == User.id,
                BackupCode.locator == bindparam("locator"),
                BackupCode.symbols == bindparam("symbols"),
                BackupCode.deactivated_at.is_(None),
            )
            .order_by(BackupCode.generation.desc(), BackupCode.spent_at.is_not(None))
            .limit(1)
            .correlate(User)
            .scalar_subquery()
        )
        query = query.outerjoin(_CODE, _CODE.id == pick).add_columns(
            _CODE.id, _CODE.set_id, _CODE.hash, _CODE.spent_at
        )
    if shape == _OLDER:
        held = exists().where(
            _LEGACY.user_id == User.id,
            _LEGACY.symbols == LEGACY_CODE_LENGTH,
            _LEGACY.deactivated_at.is_(None),
        )
        query = query.add_columns(held.correlate(User))
    if shape != _CURRENT:
        budget = mistyped.columns(
            bindparam("org_id"),
            bindparam("source"),
            bindparam("mistyped_after"),
            bindparam("keep_after"),
            rules.mistyped_threshold,
        )
        query = query.add_columns(_remaining(), *budget)
    return query


def before_hash(
    session: Session,
    org_id: str,
    external_id: str,
    candidate: str | None,
    source: str,
    now: datetime,
    rules: limits.Limits,
) -> BeforeHash | None:
    """None for an unknown user. `candidate`: the normalised input, None when it
    cannot be a code."""
    if candidate is None:
        shape = _MISTYPED
    else:
        shape = _OLDER if len(candidate) == LEGACY_CODE_LENGTH else _CURRENT
    params: dict[str, Any] = {
        "org_id": org_id,
        "external_id": external_id,
        "source": source,
        "backup_after": now - rules.window,
    }
    if candidate is not None:
        params |= {"locator": candidate[:LOCATOR_LENGTH], "symbols": len(candidate)}
    if shape != _CURRENT:
        params |= {
            "mistyped_after": now - timedelta(seconds=rules.mistyped_window_seconds),
            "keep_after": now - limits.KEEP_ROWS,
        }
    row = sql.run(session.connection(), _before_hash_statement(shape, rules), params).first()
    if row is None:
        return None
    values: list[Any] = list(row)
    users = len(_USER_COLUMNS)
    # Transient, never added to the session: callers use only its identity.
    user = User(**{c.key: v for c, v in zip(_USER_COLUMNS, values[:users], strict=True)})
    enabled, confirmed_at = values[users : users + 2]
    values = values[users + 2 :]
    state, source_nth = limits.state_of(values[0:5]), values[5]
    rest = values[6:]
    found = None
    if shape != _MISTYPED:
        code_id, set_id, code_hash, spent_at = rest[:4]
        rest = rest[4:]
        if code_id is not None:
            found = Candidate(code_id, set_id, code_hash, spent_at is not None)
    format_held = True
    if shape == _OLDER:
        format_held, rest = bool(rest[0]), rest[1:]
    remaining, seen = None, None
    if shape != _CURRENT:
        remaining, seen = int(rest[0]), mistyped.seen_from(rest[1:4])
    return BeforeHash(
        user=user,
        backup_codes_enabled=bool(enabled),
        enrolled=confirmed_at is not None,
        standing=limits.BackupStanding(state, source_nth),
        candidate=found,
        format_held=format_held,
        remaining=remaining,
        mistyped=seen,
    )


@_built_once
def _under_lock_statement(rules: limits.Limits) -> Executable:
    oldest = (
        select(func.min(AuthFailure.occurred_at))
        .where(AuthFailure.user_id == User.id)
        .correlate(User)
        .scalar_subquery()
    )
    source_failed = exists().where(
        AuthFailure.user_id == User.id,
        AuthFailure.kind == limits.KIND_BACKUP,
        AuthFailure.source == bindparam("source"),
    )
    return (
        select(
            *limits.STATE_COLUMNS,
            _source_nth(rules),
            _remaining(),
            oldest,
            source_failed.correlate(User),
        )
        .select_from(User)
        .outerjoin(AttemptLimit, _limits_join())
        .where(User.id == bindparam("user_id"))
    )


def under_lock(
    session: Session, user_id: str, source: str, now: datetime, rules: limits.Limits
) -> UnderLock:
    """Read after the user's row lock is held: a statement of its own, so that it sees
    whatever the lock waited for (a FOR UPDATE read would not, for the joined rows)."""
    params = {"user_id": user_id, "source": source, "backup_after": now - rules.window}
    ran = sql.run(session.connection(), _under_lock_statement(rules), params)
    values: list[Any] = list(ran.one())
    return UnderLock(
        standing=limits.BackupStanding(limits.state_of(values[:5]), values[5]),
        remaining=int(values[6]),
        oldest_failure=values[7],
        source_failed=bool(values[8]),
    )
