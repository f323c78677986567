"""The audit trail: append with the hash chain.

hash = SHA-256(canonical JSON of the event + prev_hash), with a gapless seq per
organization. The head row's lock serialises appends within one organization;
organizations never wait for each other. Events go into the caller's
transaction, so they commit or roll back with the change they record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from domain import notify, sql, throttles
from domain.audit.chain import GENESIS_HASH as GENESIS_HASH
from domain.audit.chain import canonical as canonical
from domain.audit.chain import chain_hash as chain_hash
from domain.audit.types import EventType, Outcome
from domain.clock import whole_millis
from domain.errors import BUDGETED_REFUSALS, DomainError
from domain.models import AuditEvent, AuditHead, new_id
from domain.uow import RecordedEvent, UnitOfWork

# Detail names that would mean a secret slipped in: refused outright.
_FORBIDDEN_DETAIL_WORDS = frozenset(
    {"code", "codes", "totp", "secret", "token", "password", "otp", "plaintext", "sheet"}
)


@dataclass(frozen=True)
class Context:
    """Who caused the change and from where; copied onto every event."""

    principal_id: str | None = None
    role: str | None = None
    token_id: str | None = None
    request_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    server_request_id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "principal_id": self.principal_id,
            "role": self.role,
            "token_id": self.token_id,
            "request_id": self.request_id,
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "server_request_id": self.server_request_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Context:
        data = data or {}
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


SYSTEM = Context(principal_id="system", role="system")
CLI = Context(principal_id="cli", role="operator")


def _check_details(details: dict[str, Any]) -> None:
    """Refuse a detail whose name says it holds a secret (`code`, `new_totp`...).
    Names are judged by their last word, so `code_count` or `token_id` pass."""
    for key, value in details.items():
        if key.lower().rsplit("_", 1)[-1] in _FORBIDDEN_DETAIL_WORDS:
            raise ValueError(f"audit details may not carry {key!r}")
        if isinstance(value, dict):
            _check_details(value)


_TYPES, _OUTCOMES = frozenset(EventType), frozenset(Outcome)
_EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
_HEADS: Table = AuditHead.__table__  # type: ignore[assignment]
_EVENT_COLUMNS = tuple(c.key for c in _EVENTS.columns)
# Its parameters are named event_*, so that it can share a statement with the head's
# move (sql.run_as_one): none is a column's name of audit_heads.
_INSERT_EVENT = insert(_EVENTS).values({c: bindparam(f"event_{c}") for c in _EVENT_COLUMNS})
_MOVE_HEAD = (
    update(_HEADS)
    .where(_HEADS.c.org_id == bindparam("head_org"))
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


# PostgreSQL: the head moves in the event's INSERT, one round trip fewer while the
# head's lock is held.
_APPEND_AND_MOVE = _INSERT_EVENT.add_cte(_MOVE_HEAD.cte("moved_head"))

_LOCK_HEAD = (
    select(_HEADS.c.seq, _HEADS.c.hash, _HEADS.c.webhooks)
    .where(_HEADS.c.org_id == bindparam("head_org"))
    .with_for_update()
)


def _locked_head(session: Session, org_id: str) -> tuple[int, str, int] | None:
    """(seq, hash, webhooks) of the organization's head, under its row lock."""
    if session.autoflush:  # what the caller left pending is written first, as a query would
        session.flush()
    row = sql.run(session.connection(), _LOCK_HEAD, {"head_org": org_id}).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


def ensure_head(session: Session, org_id: str) -> None:
    """Create an organization's chain head (at organization creation)."""
    if session.get(AuditHead, org_id) is None:
        session.add(AuditHead(org_id=org_id, seq=0, hash=GENESIS_HASH, checkpoints=0))
        session.flush()


_COUNT_WEBHOOKS = (
    update(_HEADS)
    .where(_HEADS.c.org_id == bindparam("head_org"))
    .values(webhooks=_HEADS.c.webhooks + bindparam("by"))
)


def count_webhooks(session: Session, org_id: str, by: int) -> None:
    """Change the organization's webhook count on its chain head by `by` (+1 when one
    is created, -1 when one is deleted), in the transaction that does it; see append."""
    ensure_head(session, org_id)
    session.connection().execute(_COUNT_WEBHOOKS, {"head_org": org_id, "by": by})


def append(
    uow: UnitOfWork,
    org_id: str,
    type: str,
    outcome: str,
    ctx: Context,
    *,
    user_id: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    if type not in _TYPES:
        raise ValueError(f"unknown audit event type {type!r}")
    if outcome not in _OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    details = dict(details or {})
    _check_details(details)
    session = uow.session
    # Core statements, not the ORM's flush: the append is on every audited request's
    # path, and the unit of work's bookkeeping cost more than its statements.
    # What the caller left pending is flushed first (the event may refer to it).
    head = _locked_head(session, org_id)
    if head is None:
        ensure_head(session, org_id)
        head = _locked_head(session, org_id)
        assert head is not None
    seq, prev_hash, webhooks = head
    # Transient (never added to the session): the row is written below; the object
    # is for the caller and the projections (notify.project).
    event = AuditEvent(
        id=new_id(),
        org_id=org_id,
        seq=seq + 1,
        occurred_at=whole_millis(at or datetime.now(UTC)),
        type=type,
        outcome=outcome,
        actor_principal_id=ctx.principal_id,
        actor_role=ctx.role,
        actor_token_id=ctx.token_id,
        user_id=user_id,
        request_id=ctx.request_id,
        server_request_id=ctx.server_request_id,
        source_ip=ctx.source_ip,
        user_agent=(ctx.user_agent or None) and ctx.user_agent[:512],
        details=details,
        prev_hash=prev_hash,
    )
    event.hash = chain_hash(event, prev_hash)
    sql.run_as_one(
        session.connection(),
        _APPEND_AND_MOVE,
        (_INSERT_EVENT, {f"event_{c}": getattr(event, c) for c in _EVENT_COLUMNS}),
        (_MOVE_HEAD, {"head_org": org_id, "new_seq": event.seq, "new_hash": event.hash}),
    )
    loaded = session.identity_map.get(session.identity_key(AuditHead, org_id))
    if loaded is not None:  # a head object this session holds stays true
        set_committed_value(loaded, "seq", event.seq)
        set_committed_value(loaded, "hash", event.hash)
    uow.events.append(RecordedEvent(type, outcome, details))  # counted once committed
    # Its mails and webhook deliveries, in this transaction. The head's webhook count,
    # read under its lock, is as of every commit before this event: an organization
    # without webhooks is spared their lookup, and none created before is missed.
    notify.project(uow, event, webhooks=webhooks)
    return event


def refusal(
    uow: UnitOfWork,
    org_id: str,
    user_id: str,
    type: str,
    error: DomainError,
    ctx: Context,
    outcome: str = Outcome.DENIED,
    details: dict[str, Any] | None = None,
) -> DomainError:
    """Record a refused request (its details and the error's slug as `reason`) and
    commit it, so that the record survives the request's failure:
    `raise audit.refusal(...)` (use cases call it through domain.guards.refuse;
    UnitOfWork.commit_refusal).

    A refusal the API answers 401, 403 or 404 (errors.BUDGETED_REFUSALS), of a (token,
    source) over its minute's refusals, raises 429 instead, before the chain head's
    lock is taken (domain.throttles)."""
    if isinstance(error, BUDGETED_REFUSALS):
        throttles.refusal_gate(uow.session, ctx.token_id, ctx.source_ip)
    details = {**(details or {}), "reason": error.slug}
    append(uow, org_id, type, outcome, ctx, user_id=user_id, details=details)
    return uow.commit_refusal(error)
