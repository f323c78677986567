"""Idempotency keys of regeneration requests: the key's form and a keyed
fingerprint of the body, so a retry is recognised without storing the TOTP value."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import timedelta

from domain.errors import (
    InvalidRequest,
)

IDEMPOTENCY_WINDOW = timedelta(hours=24)


MAX_IDEMPOTENCY_KEY = 255


def body_fingerprint(key: str, totp: str) -> str:
    """Keyed SHA-256 (HMAC) of the canonical body. Keyed because a plain hash of a
    6-digit value is reversed by trying a million values: it would be clear text."""
    body = json.dumps({"totp": totp}, sort_keys=True, separators=(",", ":")).encode()
    derived = hashlib.sha256(b"mfa-backup-codes/idempotency-fingerprint\x00" + key.encode())
    return hmac.new(derived.digest(), body, hashlib.sha256).hexdigest()


def same_body(stored: str | None, keys: Sequence[str], totp: str) -> bool:
    """Compared under every configured key, so a key rotation does not turn a retry
    into 'idempotency-key-reused'."""
    if stored is None:
        return False
    return any(hmac.compare_digest(stored, body_fingerprint(k, totp)) for k in keys)


def check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            field="Idempotency-Key",
        )
