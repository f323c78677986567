"""The hash chain, pure: hash = SHA-256(canonical JSON of the event + prev_hash).
The canonical form is frozen: old chains verify against it."""

from __future__ import annotations

import hashlib
import json

from domain.clock import rfc3339_micros
from domain.models import AuditEvent

GENESIS_HASH = "0" * 64


def canonical(event: AuditEvent) -> bytes:
    body = {
        "org_id": event.org_id,
        "seq": event.seq,
        "id": event.id,
        "occurred_at": rfc3339_micros(event.occurred_at),
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
