"""Secrets looked for in what the service wrote down: codes, tokens and keys as
strings, a TOTP value only as a number of its own."""

from __future__ import annotations

import re

# Timestamps and decimals are full of six-digit runs (microseconds), so they are
# blanked before a TOTP value is looked for. SQLAlchemy's statement log shows its
# parameters as reprs, `datetime.datetime(2026, 12, 4, 18, 24, 13, 926000, ...)`; an
# audit time is kept to the millisecond, so its microseconds end in 000, and a CI run
# met a TOTP value (926000) that ended so too. Process ids, six digits on a busy
# machine, are blanked where gunicorn and Celery print them.
_NOISE = re.compile(
    r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?"
    r"|datetime\.(?:datetime|time)\(\d+(?:, \d+)*"
    r"|\d+\.\d+"
    r"|\[\d+\]|\bpid:? ?\d+|Listening at: \S+ \(\d+\)"
)


def holds_number(text: str, digits: str) -> bool:
    """Whether `digits` stands in `text` as a number of its own: not inside a longer
    number, a hash or an id, nor among a timestamp's or a decimal's digits."""
    pattern = rf"(?<![0-9A-Za-z]){re.escape(digits)}(?![0-9A-Za-z])"
    return re.search(pattern, _NOISE.sub(" ", text)) is not None


def leaked(text: str, secrets: set[str]) -> list[str]:
    """The secrets found in `text` (their first three characters): a TOTP value as a
    number of its own, anything else as written or without its dashes."""
    found = []
    for secret in secrets:
        if secret.isdigit():
            hit = holds_number(text, secret)
        else:
            hit = secret in text or secret.replace("-", "") in text.replace("-", "")
        if hit:
            found.append(secret[:3] + "...")
    return found
