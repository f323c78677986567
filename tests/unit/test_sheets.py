"""The printable sheet and its text form: what a user sees, and what must never leak."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pypdf import PdfReader

from domain.sheets.render import SheetContent, render_pdf, render_text, sheet_filename

GENERATED_AT = datetime(2026, 11, 28, 9, 14, 3, tzinfo=UTC)
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def make_codes(count: int, seed: int = 0) -> tuple[str, ...]:
    """Distinct, well-formed codes, different for different seeds."""
    codes = []
    for i in range(count):
        n = (i + 1) * 7919 + seed * 104729
        symbols = "".join(ALPHABET[(n * (k + 3) + k * k) % 32] for k in range(16))
        codes.append(f"{symbols[:4]}-{symbols[4:8]}-{symbols[8:12]}-{symbols[12:]}")
    assert len(set(codes)) == count
    return tuple(codes)


def make_content(count: int = 5, seed: int = 0) -> SheetContent:
    return SheetContent(
        organization="Acme Corporation",
        account="jane.doe@example.com",
        set_id="K7Q2-9M",
        generated_at=GENERATED_AT,
        codes=make_codes(count, seed),
    )


def read(pdf: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(pdf))


def page_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in read(pdf).pages)


def test_the_pdf_shows_every_code_and_what_identifies_the_set() -> None:
    content = make_content(5)
    text = page_text(render_pdf(content))
    for code in content.codes:
        assert code in text
    assert "Set K7Q2-9M" in text
    assert "Acme Corporation" in text
    assert "jane.doe@example.com" in text
    assert "2026-11-28 09:14 UTC" in text


def test_the_pdf_says_codes_work_once_and_replace_earlier_ones() -> None:
    text = page_text(render_pdf(make_content(5)))
    assert "Each code works once." in text
    assert "These codes replace all earlier codes." in text
    assert "cut here" in text


def test_codes_are_numbered_in_order() -> None:
    content = make_content(20)
    text = page_text(render_pdf(content))
    pairs = re.findall(r"(\d+)\.\s*([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})", text)
    assert {int(n): code for n, code in pairs} == {
        i + 1: code for i, code in enumerate(content.codes)
    }


@pytest.mark.parametrize("page_size", ["A4", "Letter"])
def test_no_code_or_account_is_in_the_metadata(page_size: str) -> None:
    content = make_content(20)
    metadata = read(render_pdf(content, page_size)).metadata
    assert metadata is not None
    assert metadata.title == "Backup codes"
    values = " ".join(str(value) for value in metadata.values())
    for secret_or_personal in (*content.codes, content.account, content.organization):
        assert secret_or_personal not in values
    for code in content.codes:
        assert code.replace("-", "") not in values.replace("-", "")


def test_the_same_content_gives_identical_bytes() -> None:
    assert render_pdf(make_content(5)) == render_pdf(make_content(5))


def test_different_codes_give_different_bytes() -> None:
    assert render_pdf(make_content(5, seed=1)) != render_pdf(make_content(5, seed=2))


@pytest.mark.parametrize(
    ("page_size", "width", "height"),
    [("A4", 595.2756, 841.8898), ("Letter", 612.0, 792.0)],
)
def test_page_size_sets_the_mediabox(page_size: str, width: float, height: float) -> None:
    box = read(render_pdf(make_content(5), page_size)).pages[0].mediabox
    assert float(box.width) == pytest.approx(width, abs=0.01)
    assert float(box.height) == pytest.approx(height, abs=0.01)


def test_an_unknown_page_size_is_refused() -> None:
    with pytest.raises(ValueError, match="page size"):
        render_pdf(make_content(5), "A5")


@pytest.mark.parametrize("page_size", ["A4", "Letter"])
def test_twenty_codes_fit_on_one_page(page_size: str) -> None:
    content = make_content(20)
    reader = read(render_pdf(content, page_size))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert all(code in text for code in content.codes)


@pytest.mark.parametrize("page_size", ["A4", "Letter"])
def test_two_columns_of_16_symbol_codes_keep_apart_inside_the_cut_out(page_size: str) -> None:
    """Where each code and each number is drawn, and how wide a code is (Courier:
    0.6 em a character): the left column's codes end well before the right
    column's numbers begin, and the right column's codes inside the margin."""
    content = make_content(20)
    codes: list[tuple[float, float]] = []  # (x, font size)
    numbers: list[float] = []  # x of the right column's "11." to "20."

    def visit(text: str, cm: Any, tm: Any, font: Any, size: float) -> None:
        if text.strip() in content.codes:
            codes.append((tm[4], size * tm[0]))
        elif re.fullmatch(r"(1[1-9]|20)\.", text.strip()):
            numbers.append(tm[4])

    page = read(render_pdf(content, page_size)).pages[0]
    page.extract_text(visitor_text=visit)
    assert len(codes) == 20 and len(numbers) == 10
    lefts = sorted({round(x, 1) for x, _ in codes})
    assert len(lefts) == 2
    code_width = len(content.codes[0]) * 0.6 * max(size for _, size in codes)
    assert lefts[0] + code_width + 12 < min(numbers)  # a clear gap between the columns
    assert lefts[1] + code_width < float(page.mediabox.width) - 54


def test_a_single_code_renders() -> None:
    content = make_content(1)
    assert content.codes[0] in page_text(render_pdf(content))


def test_a_very_long_account_is_shortened_not_spilled() -> None:
    account = "first.middle.last-with-a-suffix@a-really-long-subdomain.example.com" * 3
    content = replace(make_content(20), account=account)
    reader = read(render_pdf(content, "Letter"))
    text = reader.pages[0].extract_text()
    assert len(reader.pages) == 1
    assert account not in text
    assert "\u2026" in text
    assert all(code in text for code in content.codes)


def test_characters_outside_the_standard_fonts_do_not_break_the_page() -> None:
    content = replace(make_content(5), organization="Łódź Café 日本")
    text = page_text(render_pdf(content))
    assert "?ódz Café ??" in text  # ó is in the fonts' encoding, Ł and 日本 are not
    assert "\u25a0" not in text  # no black boxes for missing glyphs


def test_render_text_is_the_codes_one_a_line_and_nothing_else() -> None:
    content = make_content(7)
    text = render_text(content)
    assert text == "".join(f"{code}\n" for code in content.codes)
    assert text.splitlines() == list(content.codes)
    assert text.endswith("\n")
    assert "K7Q2-9M" not in text


def test_sheet_filename_is_the_utc_date() -> None:
    assert sheet_filename(GENERATED_AT) == "backup-codes-2026-11-28.pdf"


def test_sheet_filename_converts_to_utc_first() -> None:
    late_evening_in_new_york = datetime(2026, 11, 28, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert sheet_filename(late_evening_in_new_york) == "backup-codes-2026-11-29.pdf"


def test_sheet_filename_refuses_a_naive_moment() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sheet_filename(datetime(2026, 11, 28, 9, 14))


@pytest.mark.parametrize("count", [0, 21])
def test_a_sheet_holds_one_to_twenty_codes(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 20"):
        replace(make_content(1), codes=make_codes(count))


@pytest.mark.parametrize(
    "moment",
    [datetime(2026, 11, 28, 9, 14), GENERATED_AT.astimezone(timezone(timedelta(hours=1)))],
)
def test_generated_at_must_be_aware_utc(moment: datetime) -> None:
    with pytest.raises(ValueError, match="UTC"):
        replace(make_content(1), generated_at=moment)


def test_the_content_repr_never_shows_a_code() -> None:
    content = SheetContent(
        organization="acme",
        account="alice",
        set_id="K7Q2-9M",
        generated_at=datetime(2026, 11, 29, tzinfo=UTC),
        codes=("AB12-CDEF-GH34-JK5M", "XY98-ZZZZ-QQQQ-RRRR"),
    )
    shown = repr(content)
    assert "AB12" not in shown and "XY98" not in shown and "acme" in shown
