"""The cursor of GET /v1/org/tokens: it round-trips exactly (to the microsecond) and
anything this service did not give out is a 422 naming `cursor`, never a 500."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from domain.errors import InvalidRequest
from domain.tokens import TokenCursor


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_a_cursor_round_trips_to_the_microsecond() -> None:
    at = datetime(2026, 11, 28, 9, 14, 3, 120_001, tzinfo=UTC)
    cursor = TokenCursor(at, "0b6f5a2e-8c1d-4a1e-9f0a-2c3d4e5f6a7b")
    assert TokenCursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64!",
        "A" * 129,
        _b64("seq:12"),
        _b64("tok:12"),
        _b64("tok:-5:abc"),
        _b64("tok:1:"),
        _b64("tok:1:" + "x" * 37),
        _b64("tok:1:a\x00b"),
        _b64("tok:" + "9" * 19 + ":abc"),
        _b64("tok:999999999999999999:abc"),  # beyond year 9999
        base64.urlsafe_b64encode(b"tok:1:\xff").decode(),
    ],
)
def test_anything_else_is_refused_naming_the_cursor(cursor: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        TokenCursor.decode(cursor)
    assert refused.value.field == "cursor"
