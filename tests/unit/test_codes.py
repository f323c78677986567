from __future__ import annotations

import math

import pytest

from domain import codes
from domain.codes import ALPHABET, CodeHasher, format_code, generate_codes, normalise


def test_codes_carry_at_least_50_bits_of_secret() -> None:
    assert codes.SECRET_LENGTH * math.log2(len(ALPHABET)) >= 50


def test_alphabet_has_no_look_alikes() -> None:
    assert len(set(ALPHABET)) == 32
    assert not set("ILOU") & set(ALPHABET)


@pytest.mark.parametrize("count", [1, 5, 20])
def test_generated_set_has_requested_size_unique_locators_and_positions(count: int) -> None:
    generated = generate_codes(count)
    assert [c.position for c in generated] == list(range(1, count + 1))
    assert len({c.locator for c in generated}) == count
    assert all(
        len(c.value) == codes.CODE_LENGTH and set(c.value) <= set(ALPHABET) for c in generated
    )


@pytest.mark.parametrize("count", [0, 21, -1])
def test_generation_refuses_counts_outside_policy(count: int) -> None:
    with pytest.raises(ValueError):
        generate_codes(count)


def test_codes_are_not_repeated_across_many_generations() -> None:
    seen = [c.value for _ in range(200) for c in generate_codes(20)]
    assert len(seen) == len(set(seen))


def test_display_groups_symbols_for_reading() -> None:
    assert format_code("ABCD1234WXYZ") == "ABCD-1234-WXYZ"


@pytest.mark.parametrize(
    "typed",
    ["abcd-1234-wxyz", " ABCD 1234 WXYZ ", "ABCD_1234.WXYZ", "abcd1234wxyz", "ABCD-1234-WXYZ\t"],
)
def test_normalise_ignores_case_separators_and_spaces(typed: str) -> None:
    assert normalise(typed) == "ABCD1234WXYZ"


def test_normalise_maps_crockford_confusables() -> None:
    assert normalise("oiL0-0000-0000") == "011000000000"


@pytest.mark.parametrize(
    "bad", ["", "ABCD-1234", "ABCD-1234-WXYZ-0", "ABCD-1234-WXYU", "ÄBCD-1234-WXYZ", "x" * 65]
)
def test_normalise_rejects_what_cannot_be_a_code(bad: str) -> None:
    assert normalise(bad) is None


@pytest.mark.parametrize(
    "folded",
    # U+017F (long s) upper-cases to S, U+0131 (dotless i) to I, U+212A (Kelvin) lower-
    # cases to k: none of them is a symbol of a code, whatever Unicode folds them to.
    ["\u017fBCD-1234-WXYZ", "\u0131BCD-1234-WXYZ", "ABCD-1234-WXY\u017f", "\u212aBCD-1234-WXYZ"],
)
def test_normalise_refuses_non_ascii_before_case_folding(folded: str) -> None:
    assert folded.upper().isascii() or folded[0] == "\u212a"  # the trap is real
    assert normalise(folded) is None


def test_plain_code_repr_never_shows_the_code() -> None:
    code = generate_codes(1)[0]
    assert code.value not in repr(code)
    assert code.value[codes.LOCATOR_LENGTH :] not in repr(code)


def test_hash_is_argon2id_and_verifies_only_the_right_code() -> None:
    hasher = CodeHasher(memory_kib=1024, time_cost=1)
    code = generate_codes(1)[0].value
    stored = hasher.hash(code)
    assert stored.startswith("$argon2id$")
    assert code not in stored
    assert hasher.verify(stored, code)
    assert not hasher.verify(stored, code[:-1] + ("0" if code[-1] != "0" else "1"))
    assert not hasher.verify("not-a-hash", code)


def test_same_code_hashes_differently_each_time() -> None:
    hasher = CodeHasher(memory_kib=1024, time_cost=1)
    assert hasher.hash("ABCD1234WXYZ") != hasher.hash("ABCD1234WXYZ")


def test_default_parameters_are_owasp_minimum() -> None:
    stored = CodeHasher().hash("ABCD1234WXYZ")
    assert "m=19456,t=2,p=1" in stored


def test_needs_rehash_when_parameters_change() -> None:
    old = CodeHasher(memory_kib=1024, time_cost=1).hash("ABCD1234WXYZ")
    assert CodeHasher(memory_kib=2048, time_cost=1).needs_rehash(old)
    assert not CodeHasher(memory_kib=1024, time_cost=1).needs_rehash(old)


def test_verify_nothing_is_always_false() -> None:
    hasher = CodeHasher(memory_kib=1024, time_cost=1)
    assert hasher.verify_nothing("ABCD1234WXYZ") is False


def test_set_ids_are_short_labels() -> None:
    set_id = codes.new_set_id()
    assert len(set_id) == 7 and set_id[3] == "-"
