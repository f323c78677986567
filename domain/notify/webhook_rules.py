"""Which webhook events an audit event becomes (pure: no I/O, no session).

The contract's table maps audit types to webhook types; `backup_codes.low` and
`backup_codes.exhausted` are derived from the same `code.accepted` event, so their
`webhook-id` is `<event id>.<type>` and a receiver that de-duplicates by id loses
none of them. A payload never holds a code, a TOTP value, a secret, a token or an
address: only the fields named here are copied out of an event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.audit.types import EventType
from domain.clock import rfc3339_millis
from domain.models import AuditEvent

ENROLLED = "mfa.enrolled"
RESET = "mfa.reset"
GENERATED = "backup_codes.generated"
USED = "backup_codes.used"
LOW = "backup_codes.low"
EXHAUSTED = "backup_codes.exhausted"
REJECTED = "backup_codes.rejected"
REVOKED = "backup_codes.revoked"
LOCKED_OUT = "user.locked_out"
REPUDIATED = "user.repudiated"
POLICY_CHANGED = "policy.changed"
CHECKPOINT = "audit.checkpoint"
PING = "webhook.ping"

WEBHOOK_TYPES: tuple[str, ...] = (
    ENROLLED,
    RESET,
    GENERATED,
    USED,
    LOW,
    EXHAUSTED,
    REJECTED,
    REVOKED,
    LOCKED_OUT,
    REPUDIATED,
    POLICY_CHANGED,
    CHECKPOINT,
    PING,
)

# `backup_codes.low` when this many or fewer codes remain after a use.
LOW_REMAINING = 2
# Written by the repudiation (the mail half); named here as the contract spells it.
_USER_REPUDIATED = "user.repudiated"


@dataclass(frozen=True)
class Outgoing:
    """One webhook event: its type, its `webhook-id`, and the JSON body to send."""

    type: str
    message_id: str
    body: dict[str, Any]


def pattern_matches(pattern: str, webhook_type: str) -> bool:
    """`*` is every type; `prefix*` every type starting with prefix; else exact."""
    if pattern.endswith("*"):
        return webhook_type.startswith(pattern[:-1])
    return pattern == webhook_type


def listens_to(patterns: Iterable[str], webhook_type: str) -> bool:
    return any(pattern_matches(p, webhook_type) for p in patterns)


def unknown_pattern(patterns: Sequence[str]) -> str | None:
    """The first pattern that names no webhook type (so would never match), or None."""
    for pattern in patterns:
        if not any(pattern_matches(pattern, t) for t in WEBHOOK_TYPES):
            return pattern
        if "*" in pattern[:-1]:
            return pattern  # a star only at the end
    return None


def body(
    webhook_type: str, org_id: str, at: datetime, common: dict[str, Any], **data: Any
) -> dict[str, Any]:
    return {
        "type": webhook_type,
        "timestamp": rfc3339_millis(at),
        "data": {"org": org_id, **common, **data},
    }


def _common(event: AuditEvent) -> dict[str, Any]:
    return {
        "user_id": event.user_id,
        "audit_event_id": event.id,
        "audit_seq": event.seq,
        "request_id": event.request_id or event.server_request_id,
    }


def outgoing(event: AuditEvent, *, regeneration_reason: str | None = None) -> list[Outgoing]:
    """The webhook events `event` causes (often none), in the order to send them."""
    details: dict[str, Any] = dict(event.details or {})
    common = _common(event)
    at = event.occurred_at

    def one(webhook_type: str, derived: bool = False, **data: Any) -> Outgoing:
        message_id = f"{event.id}.{webhook_type}" if derived else event.id
        return Outgoing(
            webhook_type, message_id, body(webhook_type, event.org_id, at, common, **data)
        )

    kind = event.type
    if kind == EventType.ENROLLMENT_CONFIRMED:
        return [one(ENROLLED)]
    if kind == EventType.MFA_RESET:
        return [one(RESET, by=event.actor_principal_id)]
    if kind == EventType.REGENERATION_SUCCEEDED:
        return [
            one(
                GENERATED,
                set_id=details.get("set_id"),
                reason=regeneration_reason,
                code_count=details.get("code_count"),
            )
        ]
    if kind == EventType.CODE_ACCEPTED:
        remaining = details.get("remaining")
        found = [one(USED, remaining=remaining, client_ip=details.get("client_ip"))]
        if isinstance(remaining, int) and remaining <= LOW_REMAINING:
            found.append(one(LOW, derived=True, remaining=remaining))
        if remaining == 0:
            found.append(one(EXHAUSTED, derived=True))
        return found
    if kind == EventType.CODE_REJECTED:
        if details.get("reason") == "mistyped":
            return []  # a malformed input is no guess at a code
        return [one(REJECTED, client_ip=details.get("client_ip"))]
    if kind == EventType.CODES_REVOKED:
        return [one(REVOKED, by=event.actor_principal_id)]
    if kind in (EventType.LOCKOUT_STARTED, EventType.LOCKOUT_PERMANENT):
        return [one(LOCKED_OUT, factor=details.get("factor"), until=details.get("until"))]
    if kind == _USER_REPUDIATED:
        return [one(REPUDIATED)]
    if kind == EventType.POLICY_CHANGED:
        return [one(POLICY_CHANGED, old=details.get("old"), new=details.get("new"))]
    return []


_NO_EVENT: dict[str, Any] = {
    "user_id": None,
    "audit_event_id": None,
    "audit_seq": None,
    "request_id": None,
}


def checkpoint(
    org_id: str, seq: int, hash: str, signature: str, key_id: str, signed_at: datetime
) -> Outgoing:
    """A signed checkpoint, sent from its own transaction: checkpoints are no audit
    events (one would move the head it signs), so the audit fields are null and the
    id is stable per chain and seq."""
    data = {"seq": seq, "hash": hash, "signature": signature, "key_id": key_id}
    return Outgoing(
        CHECKPOINT,
        f"checkpoint.{org_id}.{seq}",
        body(CHECKPOINT, org_id, signed_at, _NO_EVENT, **data),
    )


def ping(org_id: str, message_id: str, at: datetime) -> Outgoing:
    return Outgoing(PING, message_id, body(PING, org_id, at, _NO_EVENT))
