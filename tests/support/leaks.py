"""Secrets looked for in what the service wrote down: codes, tokens and keys as
strings, a TOTP value only as a number of its own."""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def numbers_held(text: str, candidates: Iterable[str]) -> set[str]:
    """Those of `candidates` (digit strings) that stand in `text` as numbers of their
    own: not inside a longer number, a hash or an id, nor among a timestamp's or a
    decimal's digits. The text is blanked once, however many candidates."""
    blanked = _NOISE.sub(" ", text)
    return {
        digits
        for digits in candidates
        if re.search(rf"(?<![0-9A-Za-z]){re.escape(digits)}(?![0-9A-Za-z])", blanked)
    }


def leaked(text: str, secrets: set[str]) -> list[str]:
    """The secrets found in `text` (their first three characters): a TOTP value as a
    number of its own, anything else as written or without its dashes."""
    found = numbers_held(text, {s for s in secrets if s.isdigit()})
    bare = text.replace("-", "")
    found |= {s for s in secrets if not s.isdigit() and (s in text or s.replace("-", "") in bare)}
    return [secret[:3] + "..." for secret in found]
