"""Standard Webhooks signing: `webhook-signature` is `v1,` + base64(HMAC-SHA256 of
`id.timestamp.body`, keyed with the secret's bytes after `whsec_`), signed by the
`standardwebhooks` package itself, so any receiver's library of that spec agrees.

During a rotation the previous secret signs beside the new one (two signatures
separated by a space) until it expires. Every attempt is signed afresh with its
own timestamp.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from standardwebhooks.webhooks import Webhook as StandardWebhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the spec's prefix, not a secret)
SECRET_BYTES = 32
ROTATION_OVERLAP_SECONDS = 24 * 3600


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def encode_body(payload: dict[str, Any]) -> bytes:
    """The bytes sent (and signed): compact JSON, the same at every attempt."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# One signer a secret, kept: building it decodes the secret, at every attempt else.
_signer = lru_cache(maxsize=256)(StandardWebhook)


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    at = datetime.fromtimestamp(timestamp, UTC)
    return _signer(secret).sign(message_id, at, body.decode())


def headers(
    message_id: str, body: bytes, secrets_in_use: Sequence[str], timestamp: int
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (newest secret first)."""
    signatures = " ".join(signature(s, message_id, timestamp, body) for s in secrets_in_use)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }
