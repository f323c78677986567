from __future__ import annotations

import math

import pytest

from domain import codes
from domain.codes import (
    ALPHABET,
    CodeHasher,
    check_symbol_of,
    format_code,
    generate_codes,
    has_valid_check,
    normalise,
)

# A code of the current format (locator AB, 13 symbols, its check) and an older one.
BODY = "ABCD1234WXYZ567"
CODE = BODY + check_symbol_of(BODY)
SHOWN = format_code(CODE)
LEGACY = "ABCD1234WXYZ"


def test_codes_carry_at_least_64_bits_of_secret_nist_800_63b_4() -> None:
    assert codes.SECRET_BITS == codes.SECRET_LENGTH * math.log2(len(ALPHABET)) == 65
    assert codes.SECRET_BITS >= 64


def test_a_code_is_locator_secret_and_check_16_symbols_in_all() -> None:
    assert codes.CODE_LENGTH == codes.LOCATOR_LENGTH + codes.SECRET_LENGTH + 1 == 16
    assert codes.LEGACY_CODE_LENGTH == 12


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
    assert all(has_valid_check(c.value) and c.symbols == 16 for c in generated)


@pytest.mark.parametrize("count", [0, 21, -1])
def test_generation_refuses_counts_outside_policy(count: int) -> None:
    with pytest.raises(ValueError):
        generate_codes(count)


def test_codes_are_not_repeated_across_many_generations() -> None:
    seen = [c.value for _ in range(200) for c in generate_codes(20)]
    assert len(seen) == len(set(seen))


def test_display_groups_symbols_for_reading() -> None:
    assert format_code(CODE) == f"{CODE[:4]}-{CODE[4:8]}-{CODE[8:12]}-{CODE[12:]}"
    assert generate_codes(1)[0].display.count("-") == 3
    assert format_code(LEGACY) == "ABCD-1234-WXYZ"


def typed_forms(shown: str) -> list[str]:
    plain = shown.replace("-", "")
    return [
        shown.lower(),
        f" {shown.replace('-', ' ')} ",
        shown.replace("-", "_", 1).replace("-", "."),
        plain.lower(),
        shown + "\t",
    ]


@pytest.mark.parametrize("typed", typed_forms(SHOWN))
def test_normalise_ignores_case_separators_and_spaces(typed: str) -> None:
    assert normalise(typed) == CODE


@pytest.mark.parametrize("typed", typed_forms("ABCD-1234-WXYZ"))
def test_an_older_12_symbol_code_is_normalised_the_same_way(typed: str) -> None:
    assert normalise(typed) == LEGACY


def test_normalise_maps_crockford_confusables() -> None:
    assert normalise("oiL0-0000-0000") == "011000000000"
    body = "011" + "0" * 12
    assert normalise("oiL" + "0" * 12 + check_symbol_of(body)) == body + check_symbol_of(body)


def test_a_wrong_check_symbol_cannot_be_a_code() -> None:
    for other in ALPHABET.replace(CODE[-1], ""):
        assert normalise(CODE[:-1] + other) is None
    assert normalise(CODE[:5] + CODE[6] + CODE[5] + CODE[7:]) is None  # a swap


def test_a_look_alike_reads_as_its_symbol_before_the_check() -> None:
    zero = "0" * 15 + check_symbol_of("0" * 15)
    assert normalise("O" * 15 + zero[-1]) == zero


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ABCD-1234",
        "ABCD-1234-WXYZ-0",  # 13
        "ABCD-1234-WXYU",  # U is not a symbol
        SHOWN[:-1] + "U",
        "ÄBCD-1234-WXYZ",
        "x" * 65,
        SHOWN + "0",  # 17
        SHOWN[:-2],  # 15
    ],
)
def test_normalise_rejects_what_cannot_be_a_code(bad: str) -> None:
    assert normalise(bad) is None


@pytest.mark.parametrize(
    "folded",
    # U+017F (long s) upper-cases to S, U+0131 (dotless i) to I, U+212A (Kelvin) lower-
    # cases to k: none of them is a symbol of a code, whatever Unicode folds them to.
    [
        "\u017fBCD-1234-WXYZ",
        "\u0131BCD-1234-WXYZ",
        "ABCD-1234-WXY\u017f",
        "\u212aBCD-1234-WXYZ",
        "\u017f" + SHOWN[1:],
    ],
)
def test_normalise_refuses_non_ascii_before_case_folding(folded: str) -> None:
    assert folded.upper().isascii() or folded[0] == "\u212a"  # the trap is real
    assert normalise(folded) is None


def test_a_code_whose_folding_would_be_valid_is_still_refused() -> None:
    """A 16-symbol code with an S in it, typed with a long s: its upper case would pass."""
    body = "S" * 15
    code = body + check_symbol_of(body)
    assert normalise(code) == code
    assert normalise("\u017f" + code[1:]) is None


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
