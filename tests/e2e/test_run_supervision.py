"""`mfa-codes run` keeps its children alive, and keeps what it writes private.

The real `run` as a subprocess: its worker SIGKILLed comes back while the API
keeps answering, and work submitted afterwards completes; every file under
var/ (SQLite and its WAL, the broker's messages, the beat's state, the keys)
has no group or other permission bit.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.service import (
    Service,
    assert_stopped,
    cmdline,
    descendants,
    interrupt,
    proc_stat,
    running,
)
from tests.support.polling import await_true
from tests.support.processes import child_env, mfa_codes

pytestmark = pytest.mark.slow

RESTARTED_WITHIN = 60.0  # one second of back-off, then a Celery worker's start


def _children(svc: Service) -> dict[str, int]:
    """`run`'s direct children by role: the word after `main()` on their command line,
    or the API (whose `serve` has become the HTTP server)."""
    found = {}
    for pid in descendants(svc.proc.pid):
        st = proc_stat(pid)
        if st is None or st[0] != svc.proc.pid:
            continue
        words = cmdline(pid).split()
        role = "api" if "main()" not in words else words[words.index("main()") + 1]
        if role == "worker" and "deliveries" in words:
            role = "deliveries"  # the delivery worker (`worker -Q deliveries`)
        found[role] = pid
    return found


class HealthProbe(threading.Thread):
    """GET /healthz every 50 ms until stopped: how many answered, how many did not."""

    def __init__(self, svc: Service) -> None:
        super().__init__(daemon=True)
        self.svc = svc
        self.answered = 0
        self.failed: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                status = self.svc.call("GET", "/healthz").status
            except OSError as exc:
                self.failed.append(type(exc).__name__)
                continue
            if status == 200:
                self.answered += 1
            else:
                self.failed.append(str(status))


def _log_lines(svc: Service) -> list[dict[str, object]]:
    lines = []
    for raw in svc.log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def test_a_killed_worker_is_restarted_and_the_api_never_stops_then_a_killed_api_too(
    tmp_path: Path,
) -> None:
    with running(tmp_path) as svc:
        before = await_true(lambda: _children(svc) if len(_children(svc)) == 4 else None, 10, "4")
        probe = HealthProbe(svc)
        probe.start()
        os.killpg(before["worker"], signal.SIGKILL)  # its own group: the worker and its pool

        def new_worker() -> int | None:
            pid = _children(svc).get("worker")
            return pid if pid and pid != before["worker"] else None

        began = time.monotonic()
        restarted = await_true(new_worker, RESTARTED_WITHIN, "a new worker")
        took = time.monotonic() - began

        # Work submitted after the kill is done by the new worker.
        svc.cli("org", "create", "acme")
        user, confirmed = svc.enroll("acme", "alice")
        done = svc.await_finished(user, confirmed["regeneration"]["id"])
        assert done["status"] == "ready"
        probe.done.set()
        probe.join()

        after = _children(svc)
        assert after["api"] == before["api"] and after["beat"] == before["beat"]
        assert after["worker"] == restarted
        assert probe.failed == [] and probe.answered > 10, (probe.answered, probe.failed)
        stopped = [
            line
            for line in _log_lines(svc)
            if line.get("child") == "worker" and "exit_code" in line
        ]
        assert stopped, svc.log.read_text()[-3000:]
        assert stopped[0]["exit_code"] == -signal.SIGKILL and stopped[0]["signal"] == "SIGKILL"
        assert stopped[0]["level"] == "error" and stopped[0]["restart_in"] == 1.0
        print(f"worker back after {took:.1f}s; /healthz answered {probe.answered} times")

        # The API too: its group (gunicorn and its workers) killed, a new one serves.
        api_killed = time.monotonic()
        os.killpg(after["api"], signal.SIGKILL)
        await_true(lambda: _children(svc).get("api") not in (None, after["api"]), 60.0, "a new API")
        await_true(lambda: svc.answers("/healthz"), 60.0, "the new API to answer")
        assert _children(svc)["worker"] == restarted
        print(f"API answering again {time.monotonic() - api_killed:.1f}s after its kill")

        # Ctrl-C after restarts still stops everything, the new children included.
        assert_stopped(svc, *interrupt(svc, whole_group=False))


def _loose_files(var: Path) -> list[str]:
    """Everything under var/ (itself included) that its group or others could use."""
    loose = []
    for path in [var, *var.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            loose.append(f"{path.relative_to(var.parent)} {oct(mode)}")
    return loose


def test_every_command_writes_its_files_private(tmp_path: Path) -> None:
    # A permissive umask in the caller, as a login shell's 022 or worse.
    previous = os.umask(0o002)
    try:
        env = child_env(MFA_VAR_DIR=str(tmp_path / "cli" / "var"))
        for command in (("db", "upgrade"), ("org", "create", "acme")):
            done = subprocess.run(
                [*mfa_codes(), *command],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        var = tmp_path / "cli" / "var"
        assert (var / "mfa.db").is_file()
        assert _loose_files(var) == []

        served = tmp_path / "served"
        served.mkdir()
        with running(served) as svc:
            svc.cli("org", "create", "acme")
            user, confirmed = svc.enroll("acme", "alice")
            svc.await_finished(user, confirmed["regeneration"]["id"])
            var = served / "var"
            names = {p.name for p in var.rglob("*")}
            # The files the issue named, all present while the service runs.
            assert {"mfa.db", "mfa.db-wal", "mfa.db-shm", "broker", "queue"} <= names, names
            assert _loose_files(var) == []
            assert_stopped(svc, *interrupt(svc, whole_group=False))
        assert _loose_files(var) == []
    finally:
        os.umask(previous)
