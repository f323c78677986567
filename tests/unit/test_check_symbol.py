"""The check symbol of a code, proven over every error, not a few examples.

The claim (docs/architecture.md): the final symbol catches every single wrong
symbol and every swap of two adjacent different symbols. The tests below try
them all, on a sample of codes, then the algebra that makes it so (over every
triple of elements), and why Luhn mod 32 would not have done.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from domain import check_symbol
from domain.check_symbol import ORDER, gf32_mul, operation
from domain.codes import ALPHABET, CODE_LENGTH, check_symbol_of, generate_codes, has_valid_check

BODY = CODE_LENGTH - 1


def sample_codes() -> Iterator[str]:
    """200 random codes (a fixed seed, so a failure can be replayed), 20 made by the
    real generator, and the edges: all 0, all 31, 0 and 31 alternating, each ramp."""
    rng = random.Random(63)
    bodies = ["".join(rng.choice(ALPHABET) for _ in range(BODY)) for _ in range(200)]
    bodies += [
        "0" * BODY,
        "Z" * BODY,
        ("0Z" * BODY)[:BODY],
        ("Z0" * BODY)[:BODY],
        ALPHABET[:BODY],
        ALPHABET[-BODY:],
    ]
    yield from (body + check_symbol_of(body) for body in bodies)
    yield from (c.value for c in generate_codes(20))


SAMPLE = list(sample_codes())


def substitutions(code: str) -> Iterator[str]:
    """Every code that differs from `code` in exactly one symbol (31 at each place)."""
    for i, original in enumerate(code):
        for other in ALPHABET:
            if other != original:
                yield code[:i] + other + code[i + 1 :]


def adjacent_swaps(code: str) -> Iterator[str]:
    """Every code made by swapping two neighbouring different symbols."""
    for i in range(len(code) - 1):
        if code[i] != code[i + 1]:
            yield code[:i] + code[i + 1] + code[i] + code[i + 2 :]


def test_the_sample_is_valid_and_has_its_edges() -> None:
    assert len(SAMPLE) == 226 and all(has_valid_check(c) for c in SAMPLE)
    assert "0" * BODY + check_symbol_of("0" * BODY) in SAMPLE
    assert check_symbol_of("0" * BODY) == "0"  # the fold of zeros stays at zero


def test_every_single_substitution_at_every_position_is_caught() -> None:
    tried = 0
    for code in SAMPLE:
        for typo in substitutions(code):
            assert not has_valid_check(typo), (code, typo)
            tried += 1
    assert tried == len(SAMPLE) * CODE_LENGTH * (ORDER - 1)


def test_every_adjacent_transposition_of_distinct_symbols_is_caught() -> None:
    tried = 0
    for code in SAMPLE:
        for typo in adjacent_swaps(code):
            assert not has_valid_check(typo), (code, typo)
            tried += 1
    assert tried >= len(SAMPLE) * 10  # the edge codes of a repeated symbol have none


def test_the_swap_of_0_and_31_is_caught_wherever_it_happens() -> None:
    """Luhn mod 32's blind spot, tried at every pair of neighbouring places of the body."""
    for i in range(BODY - 1):
        body = "7" * i + "0Z" + "7" * (BODY - i - 2)
        swapped = "7" * i + "Z0" + "7" * (BODY - i - 2)
        assert not has_valid_check(swapped + check_symbol_of(body)), i


# --- the algebra -------------------------------------------------------------------


def test_the_modulus_makes_a_field_every_nonzero_element_has_an_inverse() -> None:
    for x in range(1, ORDER):
        assert sum(1 for y in range(1, ORDER) if gf32_mul(x, y) == 1) == 1, x


def test_the_operation_is_a_quasigroup_every_row_and_column_a_permutation() -> None:
    everything = set(range(ORDER))
    for x in range(ORDER):
        assert {operation(x, y) for y in range(ORDER)} == everything
        assert {operation(y, x) for y in range(ORDER)} == everything


def test_the_quasigroup_is_totally_anti_symmetric_over_every_triple() -> None:
    """(c∘x)∘y = (c∘y)∘x only when x = y: all 32 * 32 * 32 cases."""
    for c in range(ORDER):
        for x in range(ORDER):
            for y in range(ORDER):
                same = operation(operation(c, x), y) == operation(operation(c, y), x)
                assert same == (x == y), (c, x, y)


def test_why_the_multiplier_is_neither_0_nor_1() -> None:
    """With a = 1, x∘y = x ⊕ y commutes, so swaps go unseen; with a = 0, x∘y = y
    forgets x, so it is no quasigroup and an early wrong symbol goes unseen."""

    def op(a: int, x: int, y: int) -> int:
        return gf32_mul(a, x) ^ y

    assert op(1, op(1, 0, 3), 5) == op(1, op(1, 0, 5), 3)
    assert op(0, 3, 5) == op(0, 4, 5)
    assert check_symbol.MULTIPLIER not in (0, 1)


# --- why not Luhn mod 32 -------------------------------------------------------------


def luhn_mod_32_check(values: list[int]) -> int:
    """Luhn mod N (N = 32) as usually defined: from the right, every second value
    doubled and its two base-32 digits added; the check makes the sum 0 mod 32."""
    total = 0
    for k, value in enumerate(reversed(values)):
        addend = value * 2 if k % 2 == 0 else value  # the check will sit right of these
        total += addend // ORDER + addend % ORDER
    return (ORDER - total % ORDER) % ORDER


def luhn_mod_32_valid(values: list[int]) -> bool:
    return luhn_mod_32_check(values[:-1]) == values[-1]


def test_luhn_mod_32_misses_the_swap_of_0_and_31_and_damm_does_not() -> None:
    body = [ALPHABET.index(c) for c in "AB7K0ZQ4M9XRT2W"]  # 0 and Z (31) side by side
    assert (body[4], body[5]) == (0, 31)
    swapped = [*body[:4], 31, 0, *body[6:]]
    luhn = [*body, luhn_mod_32_check(body)]
    assert luhn_mod_32_valid(luhn)
    assert luhn_mod_32_valid([*swapped, luhn[-1]])  # the swap goes unseen
    # and it catches a plain substitution, so the blind spot is the swap's alone
    assert not luhn_mod_32_valid([*body[:4], 1, *body[5:], luhn[-1]])
    damm = "".join(ALPHABET[v] for v in body)
    damm += check_symbol_of(damm)
    assert has_valid_check(damm)
    assert not has_valid_check(damm[:4] + "Z0" + damm[6:])
