"""A bound on concurrent argon2 verifications in one process.

Each verification holds ~19 MiB and a core for ~30 ms; without a bound, a burst
of sign-in attempts starves every other request of the process. A verification
waits up to `wait_seconds` for a slot, then the request is refused with
`503 busy` and Retry-After (errors.Busy).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from domain.errors import Busy


class VerificationSlots:
    def __init__(self, size: int, wait_seconds: float) -> None:
        if size < 1:
            raise ValueError("at least one verification slot")
        self.size = size
        self.wait_seconds = wait_seconds
        self._free = threading.BoundedSemaphore(size)

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._free.acquire(timeout=self.wait_seconds):
            raise Busy(retry_after=1)
        try:
            yield
        finally:
            self._free.release()
