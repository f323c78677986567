"""`mfa-codes run` serves the API's metrics on MFA_API_METRICS_PORT, added up over
its gunicorn processes, a stopped one's counts included (PROMETHEUS_MULTIPROC_DIR
under MFA_VAR_DIR, emptied at start); the API port answers /metrics with 404."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.e2e.service import HEALTHZ, healthz_count, running, scrape
from tests.e2e.slow_clients import probe
from tests.support.polling import await_true
from tests.support.processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HALF = 30


def _per_process(folder: Path) -> dict[str, float]:
    """What each process wrote (counter_<pid>.db), read one file at a time."""
    out = {}
    for path in sorted(folder.glob("counter_*.db")):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for s in metric.samples:
                if s.name == "mfa_http_requests_total" and s.labels == HEALTHZ:
                    out[path.stem] = s.value
    return out


def test_run_serves_api_metrics_summed_over_its_processes_on_their_own_port(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    stale = tmp_path / "var" / "metrics" / "api"
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"left by an earlier run")
    with running(tmp_path, {"MFA_API_METRICS_PORT": str(metrics_port)}) as svc:
        port = int(svc.base.rsplit(":", 1)[1])
        assert svc.call("GET", "/metrics").status == 404
        # `run` probes /healthz itself until it prints its banner: that one counts too.
        await_true(lambda: "is running at" in svc.log.read_text(), 30, "the banner")
        assert not (stale / "counter_999999.db").exists(), "the earlier run's samples were kept"
        base = healthz_count(scrape(metrics_port))
        answered = [probe("127.0.0.1", port).status for _ in range(HALF)]
        # An idle process takes every connection, so which one counts is luck: stop the
        # one that did (gunicorn starts another), and the rest go to another process.
        busy = [int(name.split("_")[1]) for name, n in _per_process(stale).items() if n]
        for pid in busy:
            os.kill(pid, signal.SIGTERM)
        _await_gone(busy)
        answered += [probe("127.0.0.1", port).status for _ in range(HALF)]
        assert answered == [200] * (2 * HALF)
        scrapes = [healthz_count(scrape(metrics_port)) - base for _ in range(3)]
        per_process = _per_process(stale)
    assert scrapes == [2 * HALF] * 3, scrapes
    served = {pid: n for pid, n in per_process.items() if n}
    assert len(served) >= 2, f"requests counted by one process only: {per_process}"
    assert sum(per_process.values()) - base == 2 * HALF


def _await_gone(pids: list[int]) -> None:
    await_true(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 30, f"{pids} to exit"
    )


def test_run_keeps_x_forwarded_for_for_the_api_to_judge(tmp_path: Path) -> None:
    """waitress strips proxy headers unless told not to: behind MFA_TRUSTED_PROXIES
    the audit trail must still name the client, not the proxy."""
    with running(tmp_path, {"MFA_TRUSTED_PROXIES": "127.0.0.1"}) as svc:
        svc.cli("org", "create", "acme")
        svc.cli("user", "create", "acme", "alice")
        token = svc.issue_token("acme", "alice", "user")
        req = urllib.request.Request(svc.base + "/v1/me/mfa/enrollment", data=b"", method="POST")
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("X-Forwarded-For", "203.0.113.7")
        with urllib.request.urlopen(req, timeout=10) as got:
            assert got.status == 201
        trail = [
            json.loads(line) for line in svc.cli("audit", "export", "--org", "acme").splitlines()
        ]
    sources = {e["source_ip"] for e in trail if e.get("request_id")}
    assert sources == {"203.0.113.7"}, trail
