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
  a failure, audited once a minute per source with a count.

Writers hold the user's row lock (UnitOfWork.lock_user). Reads for an early refusal
need none: the verdict is read again under the lock before anything counts.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.clock import rfc3339_millis
from domain.errors import BackupCodesLocked, InvalidRequest, TooManyAttempts, TotpLocked
from domain.models import AttemptLimit, AuthFailure, User
from domain.uow import UnitOfWork

BACKUP_CODES, TOTP = "backup_codes", "totp"
KIND_BACKUP, KIND_TOTP, KIND_MISTYPED = "backup_code", "totp", "mistyped"
MAX_USER_AGENT = 512
_KEEP_ROWS = timedelta(hours=1)  # longer than any sliding window over the rows
_MISTYPED_AUDIT_EVERY = timedelta(minutes=1)


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


def standing(session: Session, user: User, factor: str) -> AttemptLimit | None:
    return session.get(AttemptLimit, (user.id, factor), populate_existing=True)


def _window_end(state: AttemptLimit | None, factor: str, rules: Limits) -> datetime | None:
    """The end of the user-wide throttle of this factor, or None when not tripped."""
    if state is None or state.window_started_at is None:
        return None
    limit, length = rules.factor_window(factor)
    if state.window_failures < limit:
        return None
    return state.window_started_at + length


def _sliding_wait(
    session: Session,
    user: User,
    kind: str,
    source: str,
    now: datetime,
    limit: int,
    window: timedelta,
) -> int | None:
    """Seconds until fewer than `limit` rows of this kind and source lie in the window."""
    recent = list(
        session.execute(
            select(AuthFailure.occurred_at)
            .where(
                AuthFailure.user_id == user.id,
                AuthFailure.kind == kind,
                AuthFailure.source == source,
                AuthFailure.occurred_at > now - window,
            )
            .order_by(AuthFailure.occurred_at.desc())
            .limit(limit)
        ).scalars()
    )
    if len(recent) < limit:
        return None
    return _seconds_until(recent[-1] + window, now)


def check_backup_codes(
    session: Session, user: User, source: str, now: datetime, rules: Limits
) -> None:
    """Raise while backup codes are locked for the user, or throttled for it or this source."""
    state = standing(session, user, BACKUP_CODES)
    if state is not None and state.locked_at is not None:
        raise BackupCodesLocked()
    waits = []
    end = _window_end(state, BACKUP_CODES, rules)
    if end is not None and end > now:
        waits.append(_seconds_until(end, now))
    by_source = _sliding_wait(
        session, user, KIND_BACKUP, source, now, rules.threshold, rules.window
    )
    if by_source is not None:
        waits.append(by_source)
    if waits:
        raise TooManyAttempts(max(waits))


def check_totp(session: Session, user: User, now: datetime, rules: Limits) -> None:
    state = standing(session, user, TOTP)
    if state is not None and state.locked_at is not None:
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


def _state_for_update(session: Session, user: User, factor: str) -> AttemptLimit:
    state = standing(session, user, factor)
    if state is None:
        state = AttemptLimit(
            user_id=user.id, factor=factor, consecutive_failures=0, window_failures=0
        )
        session.add(state)
    return state


def end_expired(
    uow: UnitOfWork, user: User, factor: str, now: datetime, ctx: audit.Context, rules: Limits
) -> None:
    """Close a user-wide throttle whose window has passed (audited user.lockout.ended)."""
    session = uow.session
    state = standing(session, user, factor)
    end = _window_end(state, factor, rules)
    if state is None or end is None or end > now:
        return
    state.window_started_at, state.window_failures = None, 0
    audit.append(
        uow,
        user.org_id,
        EventType.LOCKOUT_ENDED,
        Outcome.SUCCESS,
        ctx,
        user_id=user.external_id,
        details={"factor": factor},
    )


def record_failure(
    uow: UnitOfWork,
    user: User,
    factor: str,
    source: str | None,
    now: datetime,
    ctx: audit.Context,
    rules: Limits,
) -> None:
    """Count one failure: a row for the sliding windows, the user's window and the
    consecutive count; audits a throttle of the user and the permanent lock."""
    session = uow.session
    session.execute(
        delete(AuthFailure).where(
            AuthFailure.user_id == user.id, AuthFailure.occurred_at < now - _KEEP_ROWS
        )
    )
    kind = KIND_BACKUP if factor == BACKUP_CODES else KIND_TOTP
    session.add(AuthFailure(user_id=user.id, kind=kind, source=source, occurred_at=now))
    end_expired(uow, user, factor, now, ctx, rules)
    state = _state_for_update(session, user, factor)
    limit, length = rules.factor_window(factor)
    if state.window_started_at is None or state.window_started_at + length <= now:
        state.window_started_at, state.window_failures = now, 0
    state.window_failures += 1
    state.consecutive_failures += 1
    session.flush()
    if state.window_failures == limit:
        audit.append(
            uow,
            user.org_id,
            EventType.LOCKOUT_STARTED,
            Outcome.DENIED,
            ctx,
            user_id=user.external_id,
            details={
                "factor": factor,
                "failures": state.window_failures,
                "until": rfc3339_millis(state.window_started_at + length),
            },
        )
    if state.consecutive_failures >= rules.consecutive_cap and state.locked_at is None:
        state.locked_at = now
        audit.append(
            uow,
            user.org_id,
            EventType.LOCKOUT_PERMANENT,
            Outcome.DENIED,
            ctx,
            user_id=user.external_id,
            details={"factor": factor, "failures": state.consecutive_failures},
        )


def record_success(
    session: Session, user: User, factor: str, source: str | None, now: datetime
) -> None:
    """A success resets the consecutive count; for TOTP the user's window too, for a
    backup code the failures of its source (the holder proved who they are there)."""
    state = standing(session, user, factor)
    if state is not None:
        state.consecutive_failures = 0
        if factor == TOTP:
            state.window_started_at, state.window_failures = None, 0
    if factor == BACKUP_CODES and source is not None:
        session.execute(
            delete(AuthFailure).where(
                AuthFailure.user_id == user.id,
                AuthFailure.kind == KIND_BACKUP,
                AuthFailure.source == source,
            )
        )
    session.flush()


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


# --- mistyped inputs (no lock) ------------------------------------------------------------


def note_mistyped(
    uow: UnitOfWork,
    user: User,
    source: str,
    now: datetime,
    ctx: audit.Context,
    rules: Limits,
    details: dict[str, Any],
) -> None:
    """Count a mistyped input against its own budget, per source across the users of
    the organization (a scatter of random inputs over many users spends one budget:
    TooManyAttempts beyond it), and audit the batch once a minute per source, with
    how many came since the last one."""
    session = uow.session
    in_org = AuthFailure.user_id.in_(select(User.id).where(User.org_id == user.org_id))
    mine = (in_org, AuthFailure.kind == KIND_MISTYPED, AuthFailure.source == source)
    window = timedelta(seconds=rules.mistyped_window_seconds)
    recent = list(
        session.execute(
            select(AuthFailure.occurred_at)
            .where(*mine, AuthFailure.occurred_at > now - window)
            .order_by(AuthFailure.occurred_at.desc())
            .limit(rules.mistyped_threshold)
        ).scalars()
    )
    if len(recent) >= rules.mistyped_threshold:
        raise TooManyAttempts(_seconds_until(recent[-1] + window, now))
    last_audited = session.execute(
        select(func.max(AuthFailure.occurred_at)).where(*mine, AuthFailure.audited.is_(True))
    ).scalar_one()
    session.execute(delete(AuthFailure).where(*mine, AuthFailure.occurred_at < now - _KEEP_ROWS))
    row = AuthFailure(user_id=user.id, kind=KIND_MISTYPED, source=source, occurred_at=now)
    session.add(row)
    session.flush()
    if last_audited is not None and now - last_audited < _MISTYPED_AUDIT_EVERY:
        return
    since = [*mine] if last_audited is None else [*mine, AuthFailure.occurred_at > last_audited]
    count = session.execute(select(func.count()).select_from(AuthFailure).where(*since))
    row.audited = True
    audit.append(
        uow,
        user.org_id,
        EventType.CODE_REJECTED,
        Outcome.FAILURE,
        ctx,
        user_id=user.external_id,
        details={**details, "reason": "mistyped", "count": int(count.scalar_one())},
    )
