"""The backup-code sheet: a printable PDF and a plain-text form. Pure: no I/O
beyond reading the font this package ships.

The words are in Helvetica, a standard PDF font every viewer has. The codes are
in DejaVu Sans Mono Bold, shipped in fonts/ and embedded (subset), because the
standard Courier is not embedded: each viewer draws it with a face of its own,
and Courier's zero has no dot. The embedded face has a dotted zero, a serifed
one and I, and 2/Z, 5/S, 8/B apart; the codes stay text (selectable, found by
pdftotext). The canvas is invariant: the same content gives the same bytes. No
code, account or organization goes into the metadata.
"""

from __future__ import annotations

import io
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import as_file, files

from reportlab.lib.colors import Color, HexColor
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.pdfbase.pdfmetrics import registerFont, stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from domain.codes import MAX_CODES, MIN_CODES

ONE_COLUMN_MAX = 10
PAGE_SIZES: dict[str, tuple[float, float]] = {"A4": A4, "Letter": LETTER}

ACCENT = HexColor("#1F5F8B")
INK = HexColor("#1E2329")
MUTED = HexColor("#5F6B76")
HAIRLINE = HexColor("#C9D1D9")
TINT = HexColor("#F3F7FA")

SANS, SANS_BOLD = "Helvetica", "Helvetica-Bold"
ROW = 27.0
MARGIN = 54.0

Style = tuple[str, float, Color]
TITLE: Style = (SANS_BOLD, 26, INK)
BODY: Style = (SANS, 11, INK)
BODY_BOLD: Style = (SANS_BOLD, 11, INK)
HEADING: Style = (SANS_BOLD, 12, ACCENT)
SMALL: Style = (SANS, 10, INK)
LABEL: Style = (SANS, 10, MUTED)
VALUE: Style = (SANS_BOLD, 10.5, INK)
NOTE: Style = (SANS, 9, MUTED)
NOTE_ACCENT: Style = (SANS_BOLD, 9, ACCENT)
FINE: Style = (SANS, 8, MUTED)
NUMBER: Style = (SANS, 11, MUTED)
CODE_FONT = "SheetMono"  # DejaVu Sans Mono Bold, registered on first use
CODE_SIZE = 17.0  # the size the codes are set at when they fit; smaller only to fit
CODE_MIN_SIZE = 12.0
COLUMN_GAP = 16.0  # at least this much space beside each column of codes
CAP_HEIGHT = 0.729  # of DejaVu Sans Mono Bold, in ems

# Lines broken by hand to fit the narrower page (A4) at 10 pt.
GUIDANCE = (
    "Keep this sheet somewhere safe and offline, such as a locked drawer. Do not store it\n"
    "in email, chat or cloud notes.",
    "Use a code only when you cannot use your authenticator app, then tick its box.",
    "If you lose this sheet, or think someone else has seen it, generate a new set right away:\n"
    "the codes on this sheet stop working at once.",
)


@dataclass(frozen=True)
class SheetContent:
    organization: str  # organization name or id
    account: str  # the user's id or email
    set_id: str  # short non-secret label of the code set, e.g. "K7Q2-9M"
    generated_at: datetime  # aware, UTC
    # Formatted codes such as "AB12-CDEF-GH34-JK5M"; out of repr, so no log or traceback shows them.
    codes: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not MIN_CODES <= len(self.codes) <= MAX_CODES:
            raise ValueError(
                f"a sheet holds {MIN_CODES} to {MAX_CODES} codes, not {len(self.codes)}"
            )
        if self.generated_at.utcoffset() != timedelta(0):
            raise ValueError("generated_at must be timezone-aware and in UTC")


def sheet_filename(generated_at: datetime) -> str:
    """The download name: ``backup-codes-YYYY-MM-DD.pdf`` (the UTC date)."""
    if generated_at.utcoffset() is None:
        raise ValueError("generated_at must be timezone-aware")
    return f"backup-codes-{generated_at.astimezone(UTC):%Y-%m-%d}.pdf"


def render_text(content: SheetContent) -> str:
    """The codes one a line, for copying; nothing else."""
    return "".join(f"{code}\n" for code in content.codes)


def render_pdf(content: SheetContent, page_size: str = "A4") -> bytes:
    """One printable page: header, the codes in a cut-out block, guidance, footer."""
    try:
        width, height = PAGE_SIZES[page_size]
    except KeyError:
        raise ValueError(f"page size must be one of {sorted(PAGE_SIZES)}") from None
    _register_code_font()
    # reportlab keeps an embedded font's subsets on the font object, per document:
    # one document at a time, for the threads of a web or worker process.
    with _RENDERING:
        return _render(content, width, height)


_RENDERING = threading.Lock()


@cache
def _register_code_font() -> None:
    with as_file(files(__package__) / "fonts" / "DejaVuSansMono-Bold.ttf") as path:
        registerFont(TTFont(CODE_FONT, str(path)))


def _render(content: SheetContent, width: float, height: float) -> bytes:
    buffer = io.BytesIO()
    c = Canvas(buffer, pagesize=(width, height), invariant=1, pageCompression=1)
    c.setTitle("Backup codes")
    c.setAuthor("mfa-backup-codes")
    c.setSubject("Multi-factor authentication backup codes")
    c.setCreator("mfa-backup-codes")
    c.setProducer("mfa-backup-codes")

    left, right = MARGIN, width - MARGIN
    c.setStrokeColor(HAIRLINE)
    c.setLineWidth(0.75)
    c.roundRect(36, 36, width - 72, height - 72, 10, stroke=1, fill=0)
    c.saveState()
    frame = c.beginPath()
    frame.roundRect(36, 36, width - 72, height - 72, 10)
    c.clipPath(frame, stroke=0, fill=0)
    c.setFillColor(ACCENT)
    c.rect(36, height - 42, width - 72, 6, stroke=0, fill=1)
    c.restoreState()

    when = f"{content.generated_at:%Y-%m-%d %H:%M} UTC"
    y = height - 96
    _text(c, left, y, "Backup codes", TITLE)
    _text(c, right, y + 8, f"Set {content.set_id}", HEADING, right=True)
    _text(c, right, y - 8, f"Generated {when}", NOTE, right=True)
    y -= 30
    _labelled(c, left, y, "Organization", content.organization, right - left)
    y -= 17
    _labelled(c, left, y, "Account", content.account, right - left)
    y -= 20
    c.setStrokeColor(HAIRLINE)
    c.line(left, y, right, y)

    y -= 26
    intro = "Use one of these codes to sign in when you cannot use your authenticator app."
    _text(c, left, y, intro, BODY)
    y -= 15
    once = "Each code works once. "
    _text(c, left, y, once, BODY)
    _text(c, left + _width(once, BODY), y, "These codes replace all earlier codes.", BODY_BOLD)

    y = _code_block(c, content, left, right, y - 26, when)

    y -= 30
    _text(c, left, y, "Keeping your codes safe", HEADING)
    y -= 8
    for item in GUIDANCE:
        for i, line in enumerate(item.splitlines()):
            y -= 14.5
            if i == 0:
                _text(c, left + 2, y, "\u2022", (SANS_BOLD, 10, ACCENT))
            _text(c, left + 14, y, line, SMALL)
        y -= 4

    c.setStrokeColor(HAIRLINE)
    c.line(left, 70, right, 70)
    _text(c, left, 56, "Private. Anyone holding this page can use these codes.", FINE)
    _text(c, right, 56, f"Set {content.set_id}  \u00b7  {when}", FINE, right=True)
    c.showPage()
    c.save()
    return buffer.getvalue()


def _code_block(
    c: Canvas, content: SheetContent, left: float, right: float, top: float, when: str
) -> float:
    """The dashed cut-out with the codes; returns the y of its bottom edge."""
    codes = content.codes
    columns = 1 if len(codes) <= ONE_COLUMN_MAX else 2
    rows = -(-len(codes) // columns)
    inset = 26.0
    header = 32.0
    row_height = ROW if columns == 1 else ROW - 2
    bottom = top - (inset + header + rows * row_height + inset - 8)
    c.setFillColor(TINT)
    c.roundRect(left + 8, bottom + 8, right - left - 16, top - bottom - 16, 6, stroke=0, fill=1)

    c.setStrokeColor(MUTED)
    c.setLineWidth(0.8)
    c.setDash(5, 3)
    c.rect(left, bottom, right - left, top - bottom, stroke=1, fill=0)
    c.setDash()
    hint = "cut here"
    hint_style: Style = (SANS, 7.5, MUTED)
    hint_width = _width(hint, hint_style) + 24
    c.setFillColor(HexColor("#FFFFFF"))
    c.rect(right - 24 - hint_width, top - 5, hint_width, 10, stroke=0, fill=1)
    _scissors(c, right - 20 - hint_width, top)
    _text(c, right - 28, top - 2.6, hint, hint_style, right=True)

    inner_left, inner_right = left + inset, right - inset
    y = top - inset - 6
    label = f"Set {content.set_id}  \u00b7  {content.account}"
    _text(c, inner_left, y, _fit(label, NOTE_ACCENT, 270), NOTE_ACCENT)
    _text(c, inner_right, y, when, NOTE, right=True)
    y -= header

    number_width = _width("20.", NUMBER) + 8
    size = _code_size(codes, columns, number_width, inner_right - inner_left)
    code: Style = (CODE_FONT, size, INK)
    cell = _cell_width(codes, size, number_width)
    span = inner_right - inner_left
    if columns == 1:
        starts = [inner_left + (span - cell) / 2]
    else:
        gap = (span - 2 * cell) / 3
        starts = [inner_left + gap, inner_left + 2 * gap + cell]
    box = _box_side(size)
    cap_height = CAP_HEIGHT * size
    c.setStrokeColor(MUTED)
    c.setLineWidth(0.9)
    for index, text in enumerate(codes):
        column, row = divmod(index, rows)
        x, row_y = starts[column], y - row * row_height
        _text(c, x + number_width - 8, row_y, f"{index + 1}.", NUMBER, right=True)
        # The box to tick, as tall as the capitals and centred on them.
        c.setFillColor(HexColor("#FFFFFF"))
        c.rect(x + number_width, row_y + (cap_height - box) / 2, box, box, stroke=1, fill=1)
        _text(c, x + number_width + box + _box_gap(size), row_y, text, code)
    return bottom


def _box_side(size: float) -> float:
    return round(0.8 * size, 2)


def _box_gap(size: float) -> float:
    return round(0.6 * size, 2)  # one character's width of the monospace face


def _cell_width(codes: tuple[str, ...], size: float, number_width: float) -> float:
    """Number, box and code: the width one code takes on a row."""
    widest = max(_width(code, (CODE_FONT, size, INK)) for code in codes)
    return number_width + _box_side(size) + _box_gap(size) + widest


def _code_size(codes: tuple[str, ...], columns: int, number_width: float, span: float) -> float:
    """The largest size, up to CODE_SIZE in half points, at which the columns of
    codes fit the span with COLUMN_GAP beside each; 16-symbol codes in two columns
    on A4 come out smaller than 12-symbol ones."""
    size = CODE_SIZE
    while size > CODE_MIN_SIZE:
        if columns * _cell_width(codes, size, number_width) + (columns + 1) * COLUMN_GAP <= span:
            break
        size -= 0.5
    return size


def _scissors(c: Canvas, x: float, y: float) -> None:
    """A small pair of scissors drawn with lines, pointing right, centred on y."""
    c.setStrokeColor(MUTED)
    c.setLineWidth(0.8)
    c.circle(x + 1.8, y + 2.1, 1.6, stroke=1, fill=0)
    c.circle(x + 1.8, y - 2.1, 1.6, stroke=1, fill=0)
    c.line(x + 3.2, y + 1.3, x + 10.5, y - 1.8)
    c.line(x + 3.2, y - 1.3, x + 10.5, y + 1.8)


def _labelled(c: Canvas, x: float, y: float, label: str, value: str, width: float) -> None:
    _text(c, x, y, label, LABEL)
    _text(c, x + 80, y, _fit(value, VALUE, width - 80), VALUE)


def _text(c: Canvas, x: float, y: float, text: str, style: Style, right: bool = False) -> None:
    font, size, color = style
    c.setFont(font, size)
    c.setFillColor(color)
    draw = c.drawRightString if right else c.drawString
    draw(x, y, _printable(text))


def _width(text: str, style: Style) -> float:
    return float(stringWidth(_printable(text), style[0], style[1]))


def _printable(text: str) -> str:
    """What the standard fonts can show: cp1252, else the letter without its accent, else ?."""
    out = []
    for char in text:
        if not char.isprintable():
            continue
        try:
            char.encode("cp1252")
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            char = base or "?"
        out.append(char)
    return "".join(out)


def _fit(text: str, style: Style, width: float) -> str:
    """The text, shortened with an ellipsis in the middle when it is wider than width."""
    text = _printable(text)
    if _width(text, style) <= width:
        return text
    for keep in range(len(text) - 1, 0, -1):
        short = f"{text[: (keep + 1) // 2]}\u2026{text[len(text) - keep // 2 :]}"
        if _width(short, style) <= width:
            return short
    return "\u2026"
