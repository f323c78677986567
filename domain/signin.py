"""Use case: spend a backup code at sign-in.

The order in which verify decides (docs/api.md): unknown user 404 (no hash: the 404
already says what timing would); backup codes disabled 403; not enrolled 409;
source or user throttled, or locked, 429 (domain.limits); an input that cannot
be a code 200 `mistyped` (no hash, no lock, not a failure, a budget of its own);
otherwise one argon2 verification, in a bounded slot (domain.slots): the code's
two-symbol locator (not secret) finds the one candidate row of the current set,
spent or not, and a miss spends the verification on a dummy hash, so a wrong
code costs what a right one costs.

What cannot be a code (domain.codes.normalise): non-ASCII, a symbol outside the
alphabet, a length other than 16 or 12, a wrong check symbol; and 12 symbols
when the user holds no active code of that older format (a read, no lock). A
mistyped input tells an attacker nothing they could not compute themselves.

Where the user's row lock is taken: AFTER the argon2 verification, not before.
The verification is the slow part and needs no lock, so concurrent attempts
for one user hash in parallel; only the short tail (re-check the limits, spend,
count the failure) is serialised by the lock. The limits are re-read under the
lock, so an attempt that hashed while another process started a throttle is
refused (429, its verdict never revealed, nothing counted). Spending is a
conditional UPDATE (... AND spent_at IS NULL AND deactivated_at IS NULL), which
accepts exactly one of any number of concurrent attempts; the others matched a
code of the current set that is now spent (a double submit), which answers
`accepted: false` and is not a failure. On SQLite the unit of work's BEGIN
IMMEDIATE holds the writer lock from the first statement, so there attempts
are simply serialised.

What it costs in statements (domain.signin_reads): one read before the hash (user,
policy, enrollment, limits, the candidate row, and for an input that may be
mistyped what its budget needs), then for a mistyped input one INSERT (and once a
minute per source the audit event); for a verified one the lock, one read under
it, the spend or the failure and the audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, bindparam, update
from sqlalchemy.orm import Session

from domain import audit, guards, limits, mistyped, signin_reads, sql
from domain.audit.types import EventType, Outcome
from domain.codes import LOW_WATERMARK, normalise
from domain.errors import NotFound
from domain.models import BackupCode
from domain.ports import Services
from domain.sources import source_key
from domain.uow import UnitOfWork

_REFUSED = EventType.SIGNIN_REFUSED


@dataclass(frozen=True)
class VerifyResult:
    accepted: bool
    remaining: int
    low: bool
    mistyped: bool = False


def verify_backup_code(
    uow: UnitOfWork,
    services: Services,
    org_id: str,
    user_external_id: str,
    code: str,
    now: datetime,
    ctx: audit.Context,
    *,
    client_ip: str | None = None,
    user_agent: str | None = None,
) -> VerifyResult:
    """`client_ip` and `user_agent`: what the front end saw of its visitor; the
    source of the per-source budget, recorded in the events' details."""
    session = uow.session
    visitor_ip = limits.parse_client_ip(client_ip)
    visitor_agent = limits.check_user_agent(user_agent)
    visitor = {k: v for k, v in (("client_ip", visitor_ip), ("user_agent", visitor_agent)) if v}
    source = source_key(visitor_ip, ctx.source_ip)
    rules = services.limits
    candidate = normalise(code)  # pure: what it says is used only after the checks below
    seen = signin_reads.before_hash(
        session, org_id, user_external_id, candidate, source, now, rules
    )
    if seen is None:
        raise NotFound("no such user")
    user = seen.user
    # Refusals that need no verification, in the contract's order: policy off, not
    # enrolled, throttled or locked (an early, unlocked read; the limits are read
    # again under the lock before anything counts).
    guards.require_usable_as_read(
        uow,
        user,
        _REFUSED,
        ctx,
        backup_codes_enabled=seen.backup_codes_enabled,
        enrolled=seen.enrolled,
    )
    with guards.refusing(uow, user, _REFUSED, ctx):
        limits.refuse_backup_codes(seen.standing, now, rules)

    if candidate is None or not seen.format_held:
        assert seen.mistyped is not None and seen.remaining is not None  # read for these
        mistyped.note(uow, user, source, now, ctx, rules, visitor, seen.mistyped)
        return VerifyResult(False, seen.remaining, seen.remaining <= LOW_WATERMARK, mistyped=True)

    row = seen.candidate
    with services.slots.held():
        if row is not None:
            matches = services.hasher.verify(row.hash, candidate)
        else:
            matches = services.hasher.verify_nothing(candidate)

    # See the module docstring for why here. Only the user's identity is used below.
    uow.lock_user_row(user)
    locked = signin_reads.under_lock(session, user.id, source, now, rules)
    state = guards.require_backup_codes_open(uow, user, locked.standing, _REFUSED, now, ctx, rules)

    accepted = row is not None and matches and not row.spent and _spend(session, row.id, now)
    # Codes are spent only under the user's lock: the count read under it, less ours.
    remaining = locked.remaining - (1 if accepted else 0)
    if accepted and row is not None:
        limits.record_success(
            session,
            user,
            limits.BACKUP_CODES,
            source,
            now,
            state,
            source_failed=locked.source_failed,
        )
        if services.hasher.needs_rehash(row.hash):
            # Keeps every stored hash on the current parameters (a spent code can
            # never verify again; live codes move over at their next regeneration).
            _rehash(session, row.id, services.hasher.hash(candidate))
        audit.append(
            uow,
            user.org_id,
            EventType.CODE_ACCEPTED,
            Outcome.SUCCESS,
            ctx,
            user_id=user.external_id,
            details={"remaining": remaining, "set_id": row.set_id, **visitor},
        )
    else:
        # A match here is a code of the current set, already spent (a double submit, a
        # retry after a timeout): refused, but nobody guessed anything, so not a failure.
        spent = {"reason": "spent"} if matches else {}
        audit.append(
            uow,
            user.org_id,
            EventType.CODE_REJECTED,
            Outcome.FAILURE,
            ctx,
            user_id=user.external_id,
            details={"remaining": remaining, **spent, **visitor},
        )
        if not matches:
            oldest = locked.oldest_failure
            limits.record_failure(
                uow,
                user,
                limits.BACKUP_CODES,
                source,
                now,
                ctx,
                rules,
                state,
                prune=oldest is not None and oldest < now - limits.KEEP_ROWS,
            )
    return VerifyResult(accepted=accepted, remaining=remaining, low=remaining <= LOW_WATERMARK)


_CODES: Table = BackupCode.__table__  # type: ignore[assignment]
_SPEND = (
    update(_CODES)
    .where(
        _CODES.c.id == bindparam("code_id"),
        _CODES.c.spent_at.is_(None),
        _CODES.c.deactivated_at.is_(None),
    )
    .values(spent_at=bindparam("now"))
)


def _spend(session: Session, code_id: str, now: datetime) -> bool:
    """True for the one attempt whose UPDATE changed the row (a Core statement: no
    ORM object of the row is loaded, so none goes stale)."""
    return sql.run(session.connection(), _SPEND, {"code_id": code_id, "now": now}).rowcount == 1


def _rehash(session: Session, code_id: str, new_hash: str) -> None:
    session.execute(
        update(BackupCode)
        .where(BackupCode.id == code_id)
        .values(hash=new_hash)
        .execution_options(synchronize_session=False)
    )
