"""Attempt limits (docs/api.md "Attempt limits"), counted in the database so they hold
across processes.

- Backup codes: `threshold` failures in `window` from one source throttle that
  source for that user (a sliding count of auth_failures rows); `user_threshold`
  failures in `user_window` from all sources throttle the user for the rest of
  that window (anchored at its first failure, so it trips at most once a window
  and is announced once: user.lockout.started).
- TOTP: `threshold` failures in `window` throttle the user's TOTP for the rest of
  the window (anchored likewise).
- Either factor: `consecutive_cap` failures in a row lock it (user.lockout.permanent)
  until a success resets the count (backup codes: a new set too), an unlock or a
  reset. The passing of a window resets nothing.
- Mistyped inputs (cannot be a code): their own sliding budget per source, never
  a failure, audited once a minute per source with a count (domain.mistyped).

Writers hold the user's row lock (UnitOfWork.lock_user). Reads for an early refusal
need none: the verdict is read again under the lock before anything counts. The
rows are read and written with plain statements (FactorState, not the ORM), and a
caller that has just read the state under the lock hands it on (`known`) rather
than have it read again: sign-in is the hot path.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Executable, ScalarSelect, Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import SQLCoreOperations

from domain import audit, sql
from domain.audit.types import EventType, Outcome
from domain.clock import rfc3339_millis
from domain.errors import BackupCodesLocked, InvalidRequest, TooManyAttempts, TotpLocked
from domain.models import AttemptLimit, AuthFailure, User
from domain.uow import UnitOfWork

BACKUP_CODES, TOTP = "backup_codes", "totp"
KIND_BACKUP, KIND_TOTP, KIND_MISTYPED = "backup_code", "totp", "mistyped"
MAX_USER_AGENT = 512
KEEP_ROWS = timedelta(hours=1)  # longer than any sliding window over the rows


@dataclass(frozen=True)
class Limits:
    threshold: int = 5
    window_seconds: int = 900
    user_threshold: int = 20
    user_window_seconds: int = 3600
    consecutive_cap: int = 100
    mistyped_threshold: int = 30
    mistyped_window_seconds: int = 900

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)

    def factor_window(self, factor: str) -> tuple[int, timedelta]:
        """The user-wide window of a factor: (failures that trip it, its length)."""
        if factor == BACKUP_CODES:
            return self.user_threshold, timedelta(seconds=self.user_window_seconds)
        return self.threshold, self.window


# --- sources -------------------------------------------------------------------------


def parse_client_ip(value: str | None) -> str | None:
    """The verify body's client_ip, checked and canonical: an IPv4 or IPv6 address
    (no zone; an IPv4-mapped one as IPv4), or absent."""
    if value is None:
        return None
    raw = value.strip()
    try:
        if len(raw) > 64 or "%" in raw:  # a zone names the front end's interface, not a visitor
            raise ValueError(raw)
        address = ipaddress.ip_address(raw)
    except ValueError:
        message = "client_ip must be an IPv4 or IPv6 address"
        raise InvalidRequest(message, field="client_ip") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def check_user_agent(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_USER_AGENT:
        raise InvalidRequest(
            f"user_agent must be a string of at most {MAX_USER_AGENT} characters",
            field="user_agent",
        )
    return value


# --- reading --------------------------------------------------------------------------


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


@dataclass(frozen=True)
class FactorState:
    """A user's attempt_limits row of one factor as read (all zero when there is none),
    so that a use case reads it once a phase and hands it on instead of reading again."""

    consecutive_failures: int = 0
    window_started_at: datetime | None = None
    window_failures: int = 0
    locked_at: datetime | None = None
    stored: bool = False  # a row exists (an UPDATE, not an INSERT, writes it)


# Select these (the attempt_limits row, outer-joined or alone) and give them to state_of.
STATE_COLUMNS = (
    AttemptLimit.user_id,
    AttemptLimit.consecutive_failures,
    AttemptLimit.window_started_at,
    AttemptLimit.window_failures,
    AttemptLimit.locked_at,
)


def state_of(values: Sequence[Any]) -> FactorState:
    user_id, consecutive, started, failures, locked_at = values
    if user_id is None:
        return FactorState()
    return FactorState(consecutive, started, failures, locked_at, stored=True)


def read_state(session: Session, user_id: str, factor: str) -> FactorState:
    row = session.execute(
        select(*STATE_COLUMNS).where(AttemptLimit.user_id == user_id, AttemptLimit.factor == factor)
    ).first()
    return FactorState() if row is None else state_of(row)


def standing(session: Session, user: User, factor: str) -> AttemptLimit | None:
    return session.get(AttemptLimit, (user.id, factor), populate_existing=True)


def _window_end(
    state: AttemptLimit | FactorState | None, factor: str, rules: Limits
) -> datetime | None:
    """The end of the user-wide throttle of this factor, or None when not tripped."""
    if state is None or state.window_started_at is None:
        return None
    limit, length = rules.factor_window(factor)
    if state.window_failures < limit:
        return None
    return state.window_started_at + length


def sliding_nth(
    user_id: SQLCoreOperations[str] | str,
    kind: str,
    source: SQLCoreOperations[str] | str,
    after: SQLCoreOperations[datetime] | datetime,
    limit: int,
) -> ScalarSelect[datetime]:
    """The `limit`-th most recent row of this kind and source later than `after` (NULL
    when fewer): a scalar subquery, so that it rides along with another read; the
    values may be bound parameters, so that the statement is built once."""
    return (
        select(AuthFailure.occurred_at)
        .where(
            AuthFailure.user_id == user_id,
            AuthFailure.kind == kind,
            AuthFailure.source == source,
            AuthFailure.occurred_at > after,
        )
        .order_by(AuthFailure.occurred_at.desc())
        .offset(limit - 1)
        .limit(1)
        .scalar_subquery()
    )


def wait_after(nth: datetime | None, window: timedelta, now: datetime) -> int | None:
    """Seconds until the sliding_nth row leaves the window (None: not throttled)."""
    return None if nth is None else _seconds_until(nth + window, now)


@dataclass(frozen=True)
class BackupStanding:
    """What the backup-code verdict needs: the user's row and the source's sliding count."""

    state: FactorState
    source_nth: datetime | None  # sliding_nth of the source's failures (rules.threshold)


def refuse_backup_codes(standing: BackupStanding, now: datetime, rules: Limits) -> None:
    """Raise while backup codes are locked for the user, or throttled for it or this source."""
    state = standing.state
    if state.locked_at is not None:
        raise BackupCodesLocked()
    waits = []
    end = _window_end(state, BACKUP_CODES, rules)
    if end is not None and end > now:
        waits.append(_seconds_until(end, now))
    by_source = wait_after(standing.source_nth, rules.window, now)
    if by_source is not None:
        waits.append(by_source)
    if waits:
        raise TooManyAttempts(max(waits))


def check_totp(session: Session, user: User, now: datetime, rules: Limits) -> None:
    state = read_state(session, user.id, TOTP)
    if state.locked_at is not None:
        raise TotpLocked()
    end = _window_end(state, TOTP, rules)
    if end is not None and end > now:
        raise TooManyAttempts(_seconds_until(end, now))


@dataclass(frozen=True)
class Standing:
    """Where the user stands with both factors (MfaStatus.limits)."""

    totp_throttled_until: datetime | None
    totp_locked: bool
    backup_codes_locked: bool


def status(session: Session, user: User, now: datetime, rules: Limits) -> Standing:
    totp = standing(session, user, TOTP)
    backup = standing(session, user, BACKUP_CODES)
    end = _window_end(totp, TOTP, rules)
    return Standing(
        totp_throttled_until=end if end is not None and end > now else None,
        totp_locked=totp is not None and totp.locked_at is not None,
        backup_codes_locked=backup is not None and backup.locked_at is not None,
    )


# --- writing (under the user's lock) ---------------------------------------------------


_LIMITS: Table = AttemptLimit.__table__  # type: ignore[assignment]
_INSERT_STATE = insert(_LIMITS)
_UPDATE_STATE = update(_LIMITS).where(
    _LIMITS.c.user_id == bindparam("for_user"), _LIMITS.c.factor == bindparam("for_factor")
)
_FAILURES: Table = AuthFailure.__table__  # type: ignore[assignment]
_PRUNE_USER = delete(_FAILURES).where(
    _FAILURES.c.user_id == bindparam("for_user"), _FAILURES.c.occurred_at < bindparam("before")
)
# PostgreSQL: the failure's row goes in with the state's write, one round trip fewer
# under the user's lock (sql.run_as_one). Its parameters are named failed_*: none is a
# column's name of attempt_limits.
_FAILED_ROW = insert(_FAILURES).values(
    user_id=bindparam("failed_user"),
    kind=bindparam("failed_kind"),
    source=bindparam("failed_source"),
    audited=False,
    occurred_at=bindparam("failed_at"),
)
_WRITE_STATE_AND_FAILURE = {
    True: _UPDATE_STATE.add_cte(_FAILED_ROW.cte("failed")),
    False: _INSERT_STATE.add_cte(_FAILED_ROW.cte("failed")),
}
_FORGET_SOURCE = delete(_FAILURES).where(
    _FAILURES.c.user_id == bindparam("for_user"),
    _FAILURES.c.kind == KIND_BACKUP,
    _FAILURES.c.source == bindparam("source"),
)


def _write_state(
    session: Session,
    user_id: str,
    factor: str,
    state: FactorState,
    failure: tuple[str, str | None, datetime] | None = None,
) -> None:
    """`failure`: (kind, source, when) of a failure row to insert with it."""
    values: dict[str, Any] = {
        "consecutive_failures": state.consecutive_failures,
        "window_started_at": state.window_started_at,
        "window_failures": state.window_failures,
        "locked_at": state.locked_at,
    }
    write: Executable
    if state.stored:
        write, values = _UPDATE_STATE, values | {"for_user": user_id, "for_factor": factor}
    else:
        write, values = _INSERT_STATE, values | {"user_id": user_id, "factor": factor}
    # Core statements on the session's connection: no ORM object holds these rows,
    # and the ORM's DML path costs more than the statement on a failed sign-in.
    conn = session.connection()
    if failure is None:
        sql.run(conn, write, values)
        return
    kind, source, when = failure
    row: dict[str, Any] = {
        "failed_user": user_id,
        "failed_kind": kind,
        "failed_source": source,
        "failed_at": when,
    }
    combined = _WRITE_STATE_AND_FAILURE[state.stored]
    sql.run_as_one(conn, combined, (_FAILED_ROW, row), (write, values))


def end_expired(
    uow: UnitOfWork,
    user: User,
    factor: str,
    now: datetime,
    ctx: audit.Context,
    rules: Limits,
    known: FactorState | None = None,
) -> FactorState:
    """Close a user-wide throttle whose window has passed (audited user.lockout.ended);
    returns the state after. `known`: the state as just read under the lock."""
    session = uow.session
    state = known if known is not None else read_state(session, user.id, factor)
    end = _window_end(state, factor, rules)
    if end is None or end > now:
        return state
    state = replace(state, window_started_at=None, window_failures=0)
    _write_state(session, user.id, factor, state)
    audit.append(
        uow,
        user.org_id,
        EventType.LOCKOUT_ENDED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"factor": factor},
    )
    return state


def record_failure(
    uow: UnitOfWork,
    user: User,
    factor: str,
    source: str | None,
    now: datetime,
    ctx: audit.Context,
    rules: Limits,
    known: FactorState | None = None,
    *,
    prune: bool = True,
) -> None:
    """Count one failure: a row for the sliding windows, the user's window and the
    consecutive count; audits a throttle of the user and the permanent lock. `known`:
    the state as just read under the lock; `prune=False` when the caller knows no
    row of the user is old enough to delete."""
    session = uow.session
    conn = session.connection()
    if prune:
        sql.run(conn, _PRUNE_USER, {"for_user": user.id, "before": now - KEEP_ROWS})
    kind = KIND_BACKUP if factor == BACKUP_CODES else KIND_TOTP
    state = end_expired(uow, user, factor, now, ctx, rules, known)
    limit, length = rules.factor_window(factor)
    started, failures = state.window_started_at, state.window_failures
    if started is None or started + length <= now:
        started, failures = now, 0
    consecutive = state.consecutive_failures + 1
    locks = consecutive >= rules.consecutive_cap and state.locked_at is None
    after = FactorState(
        consecutive_failures=consecutive,
        window_started_at=started,
        window_failures=failures + 1,
        locked_at=now if locks else state.locked_at,
        stored=state.stored,
    )
    _write_state(session, user.id, factor, after, failure=(kind, source, now))
    if after.window_failures == limit:
        audit.append(
            uow,
            user.org_id,
            EventType.LOCKOUT_STARTED,
            Outcome.DENIED,
            ctx,
            user_id=user.external_id,
            details={
                "factor": factor,
                "failures": after.window_failures,
                "until": rfc3339_millis(started + length),
            },
        )
    if locks:
        audit.append(
            uow,
            user.org_id,
            EventType.LOCKOUT_PERMANENT,
            Outcome.DENIED,
            ctx,
            user_id=user.external_id,
            details={"factor": factor, "failures": consecutive},
        )


def record_success(
    session: Session,
    user: User,
    factor: str,
    source: str | None,
    now: datetime,
    known: FactorState | None = None,
    *,
    source_failed: bool = True,
) -> None:
    """A success resets the consecutive count; for TOTP the user's window too, for a
    backup code the failures of its source (the holder proved who they are there).
    `known`: the state as just read under the lock (nothing to reset: no write);
    `source_failed=False` when the caller read under the lock that there are none."""
    del now
    state = known if known is not None else read_state(session, user.id, factor)
    after = replace(state, consecutive_failures=0)
    if factor == TOTP:
        after = replace(after, window_started_at=None, window_failures=0)
    if state.stored and after != state:
        _write_state(session, user.id, factor, after)
    if factor == BACKUP_CODES and source is not None and source_failed:
        sql.run(session.connection(), _FORGET_SOURCE, {"for_user": user.id, "source": source})


def new_set_issued(session: Session, user: User) -> None:
    """A new set ends the backup-code lock and its consecutive count."""
    state = standing(session, user, BACKUP_CODES)
    if state is not None:
        state.consecutive_failures = 0
        state.locked_at = None
        session.flush()


def clear(session: Session, user: User) -> list[str]:
    """Remove every throttle, lock and count of the user (unlock, reset); returns
    the factors that were throttled or locked."""
    held = []
    for factor in (BACKUP_CODES, TOTP):
        state = standing(session, user, factor)
        if state is not None and (
            state.locked_at is not None or state.window_failures > 0 or state.consecutive_failures
        ):
            held.append(factor)
    session.execute(delete(AttemptLimit).where(AttemptLimit.user_id == user.id))
    session.execute(delete(AuthFailure).where(AuthFailure.user_id == user.id))
    session.flush()
    return held
