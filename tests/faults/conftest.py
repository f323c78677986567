"""Fixtures of the fault tests; the harness behind them is tests/faults/stack.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.stack import Stack


@pytest.fixture
def stack(tmp_path: Path, pg_database_url: str, amqp_url: str) -> Iterator[Stack]:
    built = Stack(tmp_path, pg_database_url, amqp_url)
    try:
        yield built
    finally:
        built.close()
