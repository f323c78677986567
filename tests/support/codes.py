"""Backup codes as a test reads them, and TOTP values that are sure to be wrong."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from domain.codes import ALPHABET
from domain.totp import code_for_step, step_at

# A code in its display form (XXXX-XXXX-XXXX). `findall` in a sheet's text;
# `fullmatch` to say that a string is a code and nothing else.
CODE_RE = re.compile(rf"\b[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}\b")

_NEAR = range(-3, 4)  # steps either side that a lenient verifier might still accept


def wrong_totps(secret: str, n: int, at: datetime | None = None) -> list[str]:
    """`n` distinct six-digit values that match no TOTP step near `at` (now)."""
    step = step_at(at or datetime.now(UTC))
    valid = {code_for_step(secret, step + k) for k in _NEAR}
    values: list[str] = []
    guess = int(code_for_step(secret, step))
    while len(values) < n:
        guess = (guess + 104_729) % 1_000_000
        value = f"{guess:06d}"
        if value not in valid and value not in values:
            values.append(value)
    return values


def wrong_totp(secret: str, at: datetime | None = None) -> str:
    """Six digits that match no TOTP step near `at` (now)."""
    return wrong_totps(secret, 1, at)[0]
