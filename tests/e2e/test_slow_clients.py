"""Slow clients must not take the API down: 64 sockets trickling a header byte every
2 s, held against `mfa-codes run` (the embedded default), while every `/healthz`
probe (5 s client timeout) still answers 200; and `run` drops them itself once their
requests are 10 s late."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.service import running
from tests.e2e.slow_clients import probes, slow_sockets
from tests.support.polling import await_true

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SLOW_SOCKETS = 64
HOLD_SECONDS = 20.0
PROBES = 20


def test_run_answers_healthz_while_64_slow_sockets_are_held(tmp_path: Path) -> None:
    with running(tmp_path) as svc:
        url = urlsplit(svc.base)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        began = time.monotonic()
        with slow_sockets(host, port, SLOW_SOCKETS, interval=2.0, hold=HOLD_SECONDS) as held:
            # Every probe while all 64 are held: before the deadline drops them.
            got = probes(host, port, PROBES, within=9.0, spacing=0.4)
            assert held.opened == SLOW_SOCKETS
            # Still trickling when the last probe ran: the probes met the sockets held.
            assert not held.stop.is_set() and held.rounds >= 2
            # Past the request deadline (10 s) the server drops them itself.
            await_true(
                lambda: held.closed_by_server == SLOW_SOCKETS,
                HOLD_SECONDS - (time.monotonic() - began),
                "the slow sockets to be dropped",
            )
        failed = [p for p in got if p.status != 200]
        assert failed == [], (
            f"{len(failed)} of {len(got)} probes failed: {failed[:3]}\n"
            f"{svc.log.read_text(errors='replace')[-2000:]}"
        )
        assert len(got) >= 10, f"only {len(got)} probes in {HOLD_SECONDS}s"
