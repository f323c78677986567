"""The printable sheet and its text form: what a user sees, and what must never leak."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

from domain.sheets.render import SheetContent, render_pdf, render_text, sheet_filename
from tests.support.services import REQUIRE_SERVICES

GENERATED_AT = datetime(2026, 11, 28, 9, 14, 3, tzinfo=UTC)
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Today's sets are 12 symbols (XXXX-XXXX-XXXX), the check-symbol format 16 (XXXX-XXXX-XXXX-XXXX).
SYMBOLS = (12, 16)


def make_codes(count: int, seed: int = 0, symbols: int = 12) -> tuple[str, ...]:
    """Distinct, well-formed codes of `symbols` symbols in groups of 4, different
    for different seeds. The sheet only lays them out: no check symbol needed."""
    codes = []
    for i in range(count):
        n = (i + 1) * 7919 + seed * 104729
        chars = "".join(ALPHABET[(n * (k + 3) + k * k) % 32] for k in range(symbols))
        codes.append("-".join(chars[g : g + 4] for g in range(0, symbols, 4)))
    assert len(set(codes)) == count
    return tuple(codes)


def make_content(count: int = 5, seed: int = 0, symbols: int = 12) -> SheetContent:
    return SheetContent(
        organization="Acme Corporation",
        account="jane.doe@example.com",
        set_id="K7Q2-9M",
        generated_at=GENERATED_AT,
        codes=make_codes(count, seed, symbols),
    )


def read(pdf: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(pdf))


def page_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in read(pdf).pages)


@pytest.mark.parametrize("symbols", SYMBOLS)
def test_the_pdf_shows_every_code_and_what_identifies_the_set(symbols: int) -> None:
    content = make_content(5, symbols=symbols)
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


@pytest.mark.parametrize("symbols", SYMBOLS)
def test_codes_are_numbered_in_order(symbols: int) -> None:
    content = make_content(20, symbols=symbols)
    text = page_text(render_pdf(content))
    pairs = re.findall(r"(\d+)\.\s*([0-9A-Z]{4}(?:-[0-9A-Z]{4}){2,3})", text)
    assert {int(n): code for n, code in pairs} == {
        i + 1: code for i, code in enumerate(content.codes)
    }


@pytest.mark.parametrize("symbols", SYMBOLS)
@pytest.mark.parametrize("page_size", ["A4", "Letter"])
def test_no_code_or_account_is_in_the_metadata(page_size: str, symbols: int) -> None:
    content = make_content(20, symbols=symbols)
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


@pytest.mark.parametrize("symbols", SYMBOLS)
@pytest.mark.parametrize("page_size", ["A4", "Letter"])
def test_twenty_codes_fit_on_one_page(page_size: str, symbols: int) -> None:
    content = make_content(20, symbols=symbols)
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


@pytest.mark.parametrize("symbols", SYMBOLS)
def test_render_text_is_the_codes_one_a_line_and_nothing_else(symbols: int) -> None:
    content = make_content(7, symbols=symbols)
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


# --- the page as drawn: what is where, read back from the PDF's content stream ----


@dataclass(frozen=True)
class Drawn:
    text: str
    x: float
    y: float
    size: float
    font: Any  # the font dictionary


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    dashed: bool

    def holds(self, x: float, y: float) -> bool:
        return self.x <= x <= self.x + self.w and self.y <= y <= self.y + self.h


def drawn(pdf: bytes) -> tuple[list[Drawn], list[Rect]]:
    """Every string shown (where, in which font) and every rectangle, as the
    renderer writes them: a text matrix then Tj, and `re` for rectangles."""
    page = read(pdf).pages[0]
    fonts = page["/Resources"]["/Font"]
    texts: list[Drawn] = []
    rects: list[Rect] = []
    font, size, x, y, dashed = None, 0.0, 0.0, 0.0, False
    for operands, operator in ContentStream(page.get_contents(), page.pdf).operations:
        if operator == b"Tf":
            font, size = fonts[operands[0]].get_object(), float(operands[1])
        elif operator == b"Tm":
            x, y = float(operands[4]), float(operands[5])
        elif operator == b"Tj":
            raw = operands[0]
            text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
            texts.append(Drawn(text, x, y, size, font))
        elif operator == b"d":
            dashed = len(operands[0]) > 0
        elif operator == b"re":
            rects.append(Rect(*(float(v) for v in operands), dashed=dashed))
    return texts, rects


def right_edge(item: Drawn) -> float:
    widths, first = item.font["/Widths"], int(item.font["/FirstChar"])
    return item.x + sum(float(widths[ord(ch) - first]) for ch in item.text) / 1000 * item.size


def code_draws(content: SheetContent, texts: list[Drawn]) -> list[Drawn]:
    by_text = {t.text: t for t in texts}
    return [by_text[code] for code in content.codes]


@pytest.mark.parametrize("symbols", SYMBOLS)
def test_the_codes_are_text_in_the_embedded_monospace_face(symbols: int) -> None:
    content = make_content(20, symbols=symbols)
    texts, _ = drawn(render_pdf(content))
    for item in code_draws(content, texts):
        # Embedded (FontFile2), not the viewer's own Courier: a dotted zero everywhere.
        assert str(item.font["/BaseFont"]).endswith("+DejaVuSansMono-Bold")
        assert "/FontFile2" in item.font["/FontDescriptor"]
        assert item.size >= 12


@pytest.mark.parametrize("symbols", SYMBOLS)
@pytest.mark.parametrize("page_size", ["A4", "Letter"])
@pytest.mark.parametrize("count", [1, 10, 11, 20])
def test_a_box_to_tick_sits_just_left_of_each_code(
    count: int, page_size: str, symbols: int
) -> None:
    content = make_content(count, symbols=symbols)
    texts, rects = drawn(render_pdf(content, page_size))
    boxes = [r for r in rects if r.w == r.h and 6 <= r.w <= 16]
    assert len(boxes) == count
    for item in code_draws(content, texts):
        beside = [
            b
            for b in boxes
            if 0 < item.x - (b.x + b.w) <= item.size
            and item.y - 2 <= b.y
            and b.y + b.h <= item.y + item.size
        ]
        assert len(beside) == 1, item.text


@pytest.mark.parametrize("symbols", SYMBOLS)
@pytest.mark.parametrize("page_size", ["A4", "Letter"])
def test_twenty_codes_stay_inside_the_cut_out_and_clear_of_each_other(
    page_size: str, symbols: int
) -> None:
    content = make_content(20, symbols=symbols)
    texts, rects = drawn(render_pdf(content, page_size))
    (block,) = [r for r in rects if r.dashed]
    codes = code_draws(content, texts)
    for item in codes:
        assert block.holds(item.x, item.y) and block.holds(right_edge(item), item.y)
    left_column, right_column = codes[:10], codes[10:]
    numbers = {t.text: t for t in texts if re.fullmatch(r"\d+\.", t.text)}
    for row, item in enumerate(left_column):
        # The code of the left column ends before the number of the right column begins.
        assert right_edge(item) + 8 < numbers[f"{row + 11}."].x
        assert right_column[row].y == item.y


@pytest.mark.parametrize("symbols", SYMBOLS)
def test_the_set_id_and_the_time_are_on_both_sides_of_the_cut_line(symbols: int) -> None:
    texts, rects = drawn(render_pdf(make_content(20, symbols=symbols)))
    (block,) = [r for r in rects if r.dashed]
    for needle in ("K7Q2-9M", "2026-11-28 09:14 UTC"):
        where = {block.holds(t.x, t.y) for t in texts if needle in t.text}
        assert where == {True, False}, needle


def test_the_guidance_says_to_tick_the_box() -> None:
    text = page_text(render_pdf(make_content(5)))
    assert "then tick its box." in text
    assert "cross it out" not in text


@pytest.mark.parametrize("symbols", SYMBOLS)
def test_pdftotext_finds_every_code_exactly_as_printed(symbols: int) -> None:
    if shutil.which("pdftotext") is None:
        if REQUIRE_SERVICES:
            pytest.fail("pdftotext (poppler-utils) is missing and MFA_REQUIRE_SERVICES=1")
        pytest.skip("pdftotext (poppler-utils) is not installed")
    content = make_content(20, symbols=symbols)
    out = subprocess.run(
        ["pdftotext", "-", "-"], input=render_pdf(content), capture_output=True, check=True
    ).stdout.decode()
    found = re.findall(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4}){2,3}", out)
    assert sorted(found) == sorted(content.codes)


@pytest.mark.parametrize("symbols", SYMBOLS)
def test_the_metadata_is_fixed_words_and_nothing_of_a_code(symbols: int) -> None:
    content = make_content(20, symbols=symbols)
    reader = read(render_pdf(content))
    assert reader.xmp_metadata is None
    metadata = dict(reader.metadata or {})
    assert metadata == {
        "/Title": "Backup codes",
        "/Author": "mfa-backup-codes",
        "/Subject": "Multi-factor authentication backup codes",
        "/Creator": "mfa-backup-codes",
        "/Producer": "mfa-backup-codes",
        "/Keywords": "",
        "/CreationDate": "D:20000101000000+00'00'",  # reportlab's invariant date
        "/ModDate": "D:20000101000000+00'00'",
        "/Trapped": "/False",
    }
    words = " ".join(str(v) for k, v in metadata.items() if not k.endswith("Date")).upper()
    for code in content.codes:
        for group in code.split("-"):
            assert group not in words
