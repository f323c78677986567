"""What a statement answers, where SQLAlchemy's types say less than the result holds."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE changed (session.execute is typed as a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount)
