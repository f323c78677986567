"""Backup codes as a test reads them, and TOTP values that are sure to be wrong."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime

from domain.codes import ALPHABET, MAX_CODES, MIN_CODES, PlainCode, check_symbol_of, format_code
from domain.totp import STEP_SECONDS, code_for_step, step_at

# A code in its display form (XXXX-XXXX-XXXX-XXXX). `findall` in a sheet's text;
# `fullmatch` to say that a string is a code and nothing else.
_GROUP = rf"[{ALPHABET}]{{4}}"
CODE_RE = re.compile(rf"\b{_GROUP}-{_GROUP}-{_GROUP}-{_GROUP}\b")
# A code of the sets made before the check symbol (XXXX-XXXX-XXXX).
LEGACY_CODE_RE = re.compile(rf"\b{_GROUP}-{_GROUP}-{_GROUP}\b(?!-)")


def well_formed(body: str) -> str:
    """The display form of the 15 symbols `body` with their check symbol: a code
    that is not mistyped, whether or not anyone holds it."""
    return format_code(body + check_symbol_of(body))


# A code of the current format that nobody holds (most likely: the locator ZZ
# exists in a set of 5 about once in 200): a wrong code, not a mistyped one.
WRONG_CODE = well_formed("Z" * 15)


def wrong_code(n: int) -> str:
    """The n-th of a series of distinct wrong codes (locator ZZ, well formed)."""
    return well_formed(f"ZZZZZZZZ{n:07d}")


def wrong_secret(shown: str) -> str:
    """A well-formed code with the locator of `shown` and another secret: its row
    is found and the hash says no."""
    plain = shown.replace("-", "")
    other = "A" if plain[5] != "A" else "B"
    return well_formed(plain[:5] + other + plain[6:15])


def legacy_codes(count: int) -> list[PlainCode]:
    """The generator of the sets made before the check symbol, frozen as it was
    (12 symbols: a 2-symbol locator unique within the set and 10 from `secrets`),
    to make the sets those users still hold."""
    if not MIN_CODES <= count <= MAX_CODES:
        raise ValueError(f"code count must be {MIN_CODES} to {MAX_CODES}")

    def symbols(n: int) -> str:
        return "".join(secrets.choice(ALPHABET) for _ in range(n))

    locators: set[str] = set()
    codes = []
    for position in range(1, count + 1):
        locator = symbols(2)
        while locator in locators:
            locator = symbols(2)
        locators.add(locator)
        codes.append(PlainCode(position, locator + symbols(10)))
    return codes


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


def clear_of_a_step_end(margin: float = 1.0) -> None:
    """Into the next 30 s step when this one ends within `margin` seconds: a value
    computed now is then judged in the step it was computed for, which a test of the
    window's edges needs (a step ending between the two moments moves the window)."""
    left = STEP_SECONDS - time.time() % STEP_SECONDS
    if left < margin:
        time.sleep(left + 0.01)
