"""A check symbol over base-32 symbols: the Damm algorithm. Pure, no I/O.

Damm's algorithm folds the symbols through a totally anti-symmetric quasigroup:
interim' = interim ∘ symbol, starting from 0, and the check symbol is the one
that brings the final interim back to 0. Because every row and column of the
quasigroup is a permutation, a single wrong symbol always changes the final
interim; because it is totally anti-symmetric ((c∘x)∘y = (c∘y)∘x only when
x = y), so does every swap of two adjacent, different symbols.

The quasigroup of order 32 is x∘y = a·x ⊕ y in GF(32) = GF(2)[t]/(t⁵ + t² + 1),
with a = t (the element 2). (c∘x)∘y = a²c ⊕ a·x ⊕ y, so (c∘x)∘y = (c∘y)∘x means
(a ⊕ 1)(x ⊕ y) = 0, which for a ∉ {0, 1} is x = y. The final step
a·interim ⊕ c = 0 gives the check c = a·interim.

Luhn mod 32 would not do: its doubled value of 31 is 62 → 1 + 30 = 31, the same
as undoubled, and 0 stays 0 either way, so the swap of 0 and 31 goes unseen.
"""

from __future__ import annotations

from collections.abc import Iterable

ORDER = 32
# t⁵ + t² + 1, irreducible over GF(2) (it has no root, and no quadratic factor:
# t² + t + 1 is the only irreducible quadratic and does not divide it).
MODULUS = 0b100101
MULTIPLIER = 2  # the element t: neither 0 nor 1


def gf32_mul(x: int, y: int) -> int:
    """x·y in GF(32): carry-less multiplication reduced modulo MODULUS."""
    product = 0
    while y:
        if y & 1:
            product ^= x
        y >>= 1
        x <<= 1
        if x & ORDER:
            x ^= MODULUS
    return product


def operation(x: int, y: int) -> int:
    """The quasigroup's x∘y = a·x ⊕ y."""
    return _TIMES_A[x] ^ y


_TIMES_A = tuple(gf32_mul(MULTIPLIER, x) for x in range(ORDER))


def interim(values: Iterable[int]) -> int:
    """The Damm interim after folding `values` (each 0..31) in from 0."""
    state = 0
    for value in values:
        state = _TIMES_A[state] ^ value
    return state


def check_value(values: Iterable[int]) -> int:
    """The value whose folding after `values` brings the interim back to 0."""
    return _TIMES_A[interim(values)]


def is_valid(values: Iterable[int]) -> bool:
    """True when the last value is the check of the others."""
    return interim(values) == 0
