"""Slow clients: /healthz probe latency with and without 64 slow sockets held.

`mfa-codes run` (the embedded default, SQLite, nothing configured) on a free port.
Each probe is one GET /healthz on a new connection with a 5 s timeout, sent one
after another: first PROBES probes with nothing else going on, then as many
(at most PROBES, for at most PROBE_WINDOW seconds) while 64 sockets trickle a
request header byte every 2 s and never finish it. A probe that gets no answer
counts with the time it waited (the timeout) and in `failed`.

For reference, the same against `mfa-codes serve` (gunicorn's gthread worker,
2 processes x 4 threads) with nothing in front: what `run` was before it read
whole requests first, and what deployments put nginx in front of.

    python -m bench.bench_slow_clients
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import markdown_table
from tests.e2e.slow_clients import Probe, percentile, probe, probes, slow_sockets
from tests.support.processes import MFA_CODES, child_env, free_port, stop_group
from tests.support.settings import FAST_ARGON2

SLOW_SOCKETS = 64
PROBES = int(os.environ.get("BENCH_SLOW_CLIENTS_PROBES", "300"))
# Seconds of probing while the sockets are held: less than the 10 s after which
# `run` drops a request still incomplete, so every probe meets all 64.
PROBE_WINDOW = 9.0
HOLD = PROBE_WINDOW + 5.0
START_TIMEOUT = 90.0


@contextmanager
def _server(args: list[str], workdir: Path) -> Iterator[int]:
    port = free_port()
    env = child_env(MFA_VAR_DIR=str(workdir / "var"), MFA_LOG_LEVEL="WARNING", **FAST_ARGON2)
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(MFA_CODES), *args, "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while probe("127.0.0.1", port, timeout=1).status != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not serve:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port
    finally:
        stop_group(proc, signal.SIGINT if args[0] == "run" else signal.SIGTERM, timeout=60)


def _row(server: str, held: int, got: list[Probe], quiet_p99: float) -> dict[str, object]:
    ms = [p.seconds * 1000 for p in got]
    return {
        "server": server,
        "slow_sockets": held,
        "probes": len(got),
        "failed": sum(p.status != 200 for p in got),
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
        "p99_vs_quiet": percentile(ms, 0.99) / quiet_p99,
    }


def _measure(server: str, port: int) -> list[dict[str, object]]:
    quiet = probes("127.0.0.1", port, PROBES, within=PROBE_WINDOW, spacing=0.0)
    with slow_sockets("127.0.0.1", port, SLOW_SOCKETS, interval=2.0, hold=HOLD):
        loaded = probes("127.0.0.1", port, PROBES, within=PROBE_WINDOW, spacing=0.0)
    quiet_p99 = percentile([p.seconds * 1000 for p in quiet], 0.99)
    return [
        _row(server, 0, quiet, quiet_p99),
        _row(server, SLOW_SOCKETS, loaded, quiet_p99),
    ]


def run() -> list[dict[str, object]]:
    rows = []
    cases = [
        ("`mfa-codes run` (waitress worker)", ["run"]),
        ("`mfa-codes serve` (gthread), no proxy", ["serve", "--host", "127.0.0.1"]),
    ]
    for name, args in cases:
        with tempfile.TemporaryDirectory() as tmp, _server(args, Path(tmp)) as port:
            rows += _measure(name, port)
    return rows


if __name__ == "__main__":
    print(markdown_table(run()))
