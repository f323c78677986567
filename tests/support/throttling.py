"""The request throttles count in fixed one-minute windows, so a test that expects the
(n+1)-th call to be refused fails if a minute ends among its calls. `in_one_window`
repeats such a run, from a new source address, until all of it fell in one window."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TypeVar

from domain import throttles

T = TypeVar("T")

# The upper half of RFC 2544's benchmarking range, which no test names itself.
_addresses = (f"198.19.{128 + n // 250}.{n % 250 + 1}" for n in itertools.count())


def fresh_source() -> str:
    """A source address no other call of the run has used."""
    return next(_addresses)


def in_one_window(run: Callable[[str], T]) -> T:
    """run(source address) whose calls all fell in one throttle window (three tries)."""
    for _ in range(3):
        start = time.time() // throttles.WINDOW_SECONDS
        result = run(fresh_source())
        if time.time() // throttles.WINDOW_SECONDS == start:
            return result
    raise AssertionError("three runs in a row straddled a window's end")
