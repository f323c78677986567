"""Real gunicorn processes of the API (one worker each, on a free port read back from
gunicorn's own log line), and a plain http.client to call them: for the tests that
show something holds across API processes."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import Settings
from tests.support.processes import settings_env

START_TIMEOUT = 30.0
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class ApiProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        extra: dict[str, str] | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json", **(extra or {})}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            found = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        return Answer(resp.status, found, json.loads(raw) if raw else None)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def wait_until_serving(self, deadline: float) -> None:
        """The port from gunicorn's own log line, then /healthz answering 200."""
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            if not self.port:
                found = _LISTENING.search(self.tail())
                self.port = int(found.group(1)) if found else 0
            if self.port:
                try:
                    if self.request("GET", "/healthz").status == 200:
                        return
                except OSError:
                    pass  # bound, but the worker is not accepting yet
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not serve in time:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def api_env(settings: Settings) -> dict[str, str]:
    # The test is the proxy: a test of per-source counts names its own source.
    return settings_env(settings, MFA_LOG_LEVEL="WARNING", MFA_TRUSTED_PROXIES="127.0.0.1/32")


def start_api(name: str, settings: Settings, workdir: Path) -> ApiProcess:
    log = workdir / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "api.wsgi:application",
        "--bind",
        "127.0.0.1:0",  # a free port, read back from the log: no race for a port
        "-w",
        "1",
        "--log-level",
        "info",  # the "Listening at" line is at info
    ]
    with log.open("wb") as out:
        # The working directory is empty: no .env or gunicorn.conf.py is picked up.
        proc = subprocess.Popen(
            command, cwd=workdir, env=api_env(settings), stdout=out, stderr=subprocess.STDOUT
        )
    return ApiProcess(name, proc, log)


@contextmanager
def two_apis(settings: Settings, workdir: Path) -> Iterator[tuple[ApiProcess, ApiProcess]]:
    """Two API processes on the same settings, both serving; stopped on the way out."""
    started = [start_api(name, settings, workdir) for name in ("api-a", "api-b")]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for p in started:
            p.wait_until_serving(deadline)
        yield started[0], started[1]
    finally:
        for p in started:
            p.stop()
