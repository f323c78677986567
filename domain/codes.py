"""Backup codes: generate, normalise, hash, verify. Pure, no I/O.

A code is 16 symbols of Crockford's base32 shown as XXXX-XXXX-XXXX-XXXX. The
first two symbols are a locator, unique within the user's active set and stored
in clear, so that checking a code costs one argon2 verification whatever the
number of codes. The next thirteen carry 65 bits from `secrets` (NIST SP
800-63B-4 asks at least 64 for saved recovery codes). The last is a check
symbol over the other fifteen (domain.check_symbol), so a mistyped code is told
apart without computing a hash. The argon2id hash covers all sixteen.

Sets made before the check symbol have 12 symbols (a locator and 50 bits, no
check): they keep verifying until they are replaced.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from domain import check_symbol

# Crockford's base32: no I, L, O, U, so nothing looks like anything else.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LOCATOR_LENGTH = 2
SECRET_LENGTH = 13
CHECK_LENGTH = 1
CODE_LENGTH = LOCATOR_LENGTH + SECRET_LENGTH + CHECK_LENGTH
LEGACY_CODE_LENGTH = 12  # sets made before the check symbol: locator + 10 secret symbols
GROUP = 4
SECRET_BITS = SECRET_LENGTH * 5
# How many codes a set may hold: the one definition (policy, sheets and the schema use it;
# migration 0001 keeps its own literal, as migrations do).
MIN_CODES, MAX_CODES = 1, 20
LOW_WATERMARK = 2  # a set is `low` when this many or fewer unspent codes remain

_DECODE = {c: c for c in ALPHABET} | {"O": "0", "I": "1", "L": "1"}
_VALUE = {c: v for v, c in enumerate(ALPHABET)}
_SEPARATORS = frozenset(" -_.\t")


@dataclass(frozen=True)
class PlainCode:
    """A freshly generated code. Exists only inside the task that makes it."""

    position: int
    value: str  # normalised, CODE_LENGTH symbols, the check symbol last

    @property
    def locator(self) -> str:
        return self.value[:LOCATOR_LENGTH]

    @property
    def symbols(self) -> int:
        """The format of the code (what backup_codes.symbols records)."""
        return len(self.value)

    @property
    def display(self) -> str:
        return format_code(self.value)

    def __repr__(self) -> str:  # never print a code by accident
        return f"PlainCode(position={self.position}, locator={self.locator!r})"


def _random_symbols(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def generate_codes(count: int) -> list[PlainCode]:
    if not MIN_CODES <= count <= MAX_CODES:
        raise ValueError(f"code count must be {MIN_CODES} to {MAX_CODES}")
    locators: set[str] = set()
    codes = []
    for position in range(1, count + 1):
        locator = _random_symbols(LOCATOR_LENGTH)
        while locator in locators:
            locator = _random_symbols(LOCATOR_LENGTH)
        locators.add(locator)
        body = locator + _random_symbols(SECRET_LENGTH)
        codes.append(PlainCode(position, body + check_symbol_of(body)))
    return codes


def check_symbol_of(body: str) -> str:
    """The check symbol of a code's first fifteen (normalised) symbols."""
    return ALPHABET[check_symbol.check_value(_VALUE[c] for c in body)]


def has_valid_check(value: str) -> bool:
    """Whether a normalised code of the current format ends with its check symbol."""
    return len(value) == CODE_LENGTH and check_symbol.is_valid(_VALUE[c] for c in value)


def new_set_id() -> str:
    """A short, non-secret label printed on the sheet to tell printouts apart."""
    raw = _random_symbols(6)
    return f"{raw[:3]}-{raw[3:]}"


def format_code(value: str) -> str:
    return "-".join(value[i : i + GROUP] for i in range(0, len(value), GROUP))


def normalise(raw: str) -> str | None:
    """The canonical symbols (16, or 12 for an older set), or None when the input
    cannot be a code: non-ASCII (refused before case folding, since Unicode folds
    U+017F, long s, to S and U+0131, dotless i, to I), a symbol outside the
    alphabet, another length, or 16 symbols whose check symbol is wrong."""
    if not isinstance(raw, str) or len(raw) > 64 or not raw.isascii():
        return None
    out = []
    for ch in raw.strip().upper():
        if ch in _SEPARATORS:
            continue
        mapped = _DECODE.get(ch)
        if mapped is None:
            return None
        out.append(mapped)
    value = "".join(out)
    if len(value) == LEGACY_CODE_LENGTH or has_valid_check(value):
        return value
    return None


class CodeHasher:
    """argon2id with configurable cost; OWASP's minimum profile by default."""

    def __init__(self, memory_kib: int = 19 * 1024, time_cost: int = 2, parallelism: int = 1):
        self._ph = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )

    def hash(self, code: str) -> str:
        return self._ph.hash(code)

    def hash_all(self, codes: Iterable[PlainCode]) -> list[str]:
        return [self.hash(c.value) for c in codes]

    def verify(self, stored_hash: str, code: str) -> bool:
        try:
            return self._ph.verify(stored_hash, code)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._ph.check_needs_rehash(stored_hash)

    @cached_property
    def _dummy_hash(self) -> str:
        return self._ph.hash(_random_symbols(CODE_LENGTH))

    def verify_nothing(self, code: str) -> bool:
        """Spend one verification on a hash nothing can match, so that a miss
        costs what a hit costs and timing tells nothing."""
        self.verify(self._dummy_hash, code)
        return False
