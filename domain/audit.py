"""The audit trail: append with the hash chain.

hash = SHA-256(canonical JSON of the event + prev_hash), with a gapless seq per
organization. The head row's lock serialises appends within one organization;
organizations never wait for each other. Events go into the caller's
transaction, so they commit or roll back with the change they record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import audit_types as types
from domain import metrics, throttles
from domain.errors import DomainError
from domain.models import AuditEvent, AuditHead, new_id

GENESIS_HASH = "0" * 64

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


def format_ts(moment: datetime) -> str:
    """The chain's own form (microseconds), hashed: it never changes, old chains
    verify against it. What the API shows is format_ms."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_ms(moment: datetime) -> str:
    """RFC 3339, UTC, milliseconds: how the API shows the trail's times."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def whole_millis(moment: datetime) -> datetime:
    """Events and checkpoints are timed to the millisecond, the API's precision, so
    the time an export shows is the time that was hashed."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def canonical(event: AuditEvent) -> bytes:
    body = {
        "org_id": event.org_id,
        "seq": event.seq,
        "id": event.id,
        "occurred_at": format_ts(event.occurred_at),
        "type": event.type,
        "outcome": event.outcome,
        "actor": {
            "principal_id": event.actor_principal_id,
            "role": event.actor_role,
            "token_id": event.actor_token_id,
        },
        "user_id": event.user_id,
        "request_id": event.request_id,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "details": event.details or {},
    }
    # Only when set: events written before the field existed keep their hashes.
    if event.server_request_id is not None:
        body["server_request_id"] = event.server_request_id
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(event: AuditEvent, prev_hash: str) -> str:
    return hashlib.sha256(canonical(event) + prev_hash.encode()).hexdigest()


def _check_details(details: dict[str, Any]) -> None:
    """Refuse a detail whose name says it holds a secret (`code`, `new_totp`...).
    Names are judged by their last word, so `code_count` or `token_id` pass."""
    for key, value in details.items():
        if key.lower().rsplit("_", 1)[-1] in _FORBIDDEN_DETAIL_WORDS:
            raise ValueError(f"audit details may not carry {key!r}")
        if isinstance(value, dict):
            _check_details(value)


def ensure_head(session: Session, org_id: str) -> None:
    """Create an organization's chain head (at organization creation)."""
    if session.get(AuditHead, org_id) is None:
        session.add(AuditHead(org_id=org_id, seq=0, hash=GENESIS_HASH, checkpoints=0))
        session.flush()


def append(
    session: Session,
    org_id: str,
    type: str,
    outcome: str,
    ctx: Context,
    *,
    user_id: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    if type not in types.ALL:
        raise ValueError(f"unknown audit event type {type!r}")
    if outcome not in types.OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    details = dict(details or {})
    _check_details(details)
    head = session.execute(
        select(AuditHead).where(AuditHead.org_id == org_id).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        ensure_head(session, org_id)
        head = session.execute(
            select(AuditHead).where(AuditHead.org_id == org_id).with_for_update()
        ).scalar_one()
    event = AuditEvent(
        id=new_id(),
        org_id=org_id,
        seq=head.seq + 1,
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
        prev_hash=head.hash,
    )
    event.hash = chain_hash(event, head.hash)
    session.add(event)
    head.seq = event.seq
    head.hash = event.hash
    session.flush()
    metrics.note_event(session, type, outcome, details)
    return event


def refusal(
    session: Session,
    org_id: str,
    user_id: str,
    type: str,
    error: DomainError,
    ctx: Context,
    outcome: str = types.DENIED,
) -> DomainError:
    """Record a refused request and mark the error committed, so that the record
    survives the request's failure: `raise audit.refusal(...)`.

    A 401/403/404 refusal of a (token, source) over its minute's refusals raises
    429 instead, before the chain head's lock is taken (domain.throttles)."""
    if error.status in (401, 403, 404):
        throttles.refusal_gate(session, ctx.token_id, ctx.source_ip)
    append(session, org_id, type, outcome, ctx, user_id=user_id, details={"reason": error.slug})
    return error.committed()
