"""`mfa-codes run` as a subprocess for the end-to-end tests: started on a free port
in an empty directory, called over plain HTTP and its own CLI, its process tree
read from /proc (to prove that a stop leaves nothing behind), its metrics scraped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pyotp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import await_true
from tests.support.processes import child_env, free_port, mfa_codes
from tests.support.settings import FAST_ARGON2

READY_WITHIN = 90.0  # first start: migrations, gunicorn and a Celery worker
# Well under `run`'s grace period for its children (25 s): reaching it means a child hung.
STOP_WITHIN = 20.0
POLL = 0.1
# --- processes --------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time) of a live process, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None  # a zombie has exited; only its parent's wait is missing
    return int(fields[1]), int(fields[3]), int(fields[19])


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def descendants(root: int) -> dict[int, int]:
    """Every live process below `root`: pid -> start time (guards against pid reuse)."""
    table = {pid: st for pid in all_pids() if (st := proc_stat(pid)) is not None}
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def survivors(session: int, tree: dict[int, int]) -> list[int]:
    """Processes of the tree, or of the service's session, still alive."""
    alive = [pid for pid, start in tree.items() if (st := proc_stat(pid)) and st[2] == start]
    in_session = [pid for pid in all_pids() if (st := proc_stat(pid)) and st[1] == session]
    return sorted(set(alive) | set(in_session))


# --- the service ------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: Message  # case-insensitive, as HTTP header names are
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    base: str
    env: dict[str, str]
    cwd: Path
    log: Path
    seen: set[str] = field(default_factory=set)  # every secret the test saw

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*mfa_codes(), *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def issue_token(self, org: str, principal: str, role: str) -> str:
        lines = self.cli("token", "issue", org, principal, "--role", role).strip().splitlines()
        token = lines[-1].strip()  # API.md: printed once, on a line of its own, last
        assert token and " " not in token, lines
        self.seen.add(token)
        return token

    def enroll(self, org: str, external_id: str) -> tuple[str, dict[str, Any]]:
        """A user of `org`, made with the CLI, enrolled over HTTP: (their token, the
        confirmation's body, which names the first regeneration)."""
        self.cli("user", "create", org, external_id)
        user = self.issue_token(org, external_id, "user")
        started = self.call("POST", "/v1/me/mfa/enrollment", user)
        assert started.status == 201, started.body
        totp = pyotp.TOTP(started.json()["secret"]).now()
        confirmed = self.call("POST", "/v1/me/mfa/enrollment/confirm", user, {"totp": totp})
        assert confirmed.status == 201, confirmed.body
        body: dict[str, Any] = confirmed.json()
        return user, body

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: object = None,
        accept: str | None = None,
    ) -> Response:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return Response(err.code, err.headers, err.read())

    def answers(self, path: str) -> bool:
        assert self.proc.poll() is None, f"`run` exited early:\n{self.log.read_text()[-4000:]}"
        try:
            return self.call("GET", path).status == 200
        except OSError:
            return False

    def await_finished(self, token: str, regeneration_id: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            got = self.call("GET", f"/v1/me/backup-codes/regenerations/{regeneration_id}", token)
            assert got.status == 200, got.body
            body: dict[str, Any] = got.json()
            return None if body["status"] in ("queued", "processing") else body

        return await_true(probe, 60.0, f"regeneration {regeneration_id}")


@contextmanager
def running(
    workdir: Path, extra_env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[Service]:
    """`mfa-codes run` on `port` (else a free one) with nothing configured but a fresh
    MFA_VAR_DIR (and `extra_env`)."""
    port = port or free_port()
    env = child_env(MFA_VAR_DIR=str(workdir / "var"), **FAST_ARGON2, **(extra_env or {}))
    log_path = workdir / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*mfa_codes(), "run", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and group, as a terminal would give it
        )
    svc = Service(proc, f"http://127.0.0.1:{port}", env, workdir, log_path)
    try:
        await_true(lambda: svc.answers("/readyz"), READY_WITHIN, "GET /readyz to answer 200")
        yield svc
    finally:
        # Leave nothing behind, whatever happened: `run` itself if the test failed
        # before stopping it, and any orphan still in its session.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in survivors(proc.pid, {}):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def interrupt(svc: Service, *, whole_group: bool) -> tuple[int, float, list[int]]:
    """SIGINT (Ctrl-C reaches the whole foreground group; `kill -INT` only `run`):
    (exit code, seconds to exit, processes left behind)."""
    tree = descendants(svc.proc.pid)
    assert len(tree) >= 3, f"expected the API, a worker and the scheduler, found {tree}"
    began = time.monotonic()
    if whole_group:
        os.killpg(svc.proc.pid, signal.SIGINT)
    else:
        os.kill(svc.proc.pid, signal.SIGINT)
    code = svc.proc.wait(timeout=STOP_WITHIN + 10)
    took = time.monotonic() - began
    # `run` reaps its own children; a grandchild (a gunicorn worker) may take a moment more.
    end = time.monotonic() + 5.0
    while (left := survivors(svc.proc.pid, tree)) and time.monotonic() < end:
        time.sleep(POLL)
    return code, took, left


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def assert_stopped(svc: Service, code: int, took: float, left: list[int]) -> None:
    tail = svc.log.read_text(errors="replace")[-3000:]
    assert code == 0, f"exit code {code}:\n{tail}"
    assert left == [], f"left behind: {[(pid, cmdline(pid)) for pid in left]}\n{tail}"
    assert took < STOP_WITHIN, f"stopping took {took:.1f}s:\n{tail}"


HEALTHZ = {"route": "/healthz", "method": "GET", "status": "200"}


def healthz_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "mfa_http_requests_total" and s.labels == HEALTHZ:
                return s.value
    return 0.0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as got:
        body: bytes = got.read()
    return body.decode()
