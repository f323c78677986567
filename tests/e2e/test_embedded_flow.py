"""The whole flow as a person runs it: `mfa-codes run` as a subprocess in an empty
directory, the CLI for accounts and tokens, plain HTTP for the rest, SIGINT to stop.

enrollment -> first sheet (PDF) -> a code of it spent -> regeneration -> sheet
exactly once (text form, then 410) -> old codes refused, new accepted once ->
SIGINT stops the API, the worker and the scheduler, with exit 0 and no child left
(to `run` alone, and as a terminal's Ctrl-C sends it, to the whole group).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import pyotp
import pytest
from pypdf import PdfReader

from tests.support.settings import FAST_ARGON2

pytestmark = pytest.mark.slow

CODE_RE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b")
READY_WITHIN = 90.0  # first start: migrations, gunicorn and a Celery worker
# Well under `run`'s grace period for its children (25 s): reaching it means a child hung.
STOP_WITHIN = 20.0
POLL = 0.1
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli() -> list[str]:
    """The .venv's console script, next to this interpreter."""
    exe = shutil.which("mfa-codes", path=str(Path(sys.executable).parent))
    assert exe, f"no mfa-codes console script beside {sys.executable}"
    return [exe]


def _await(probe: Callable[[], T | None], what: str, within: float) -> T:
    end = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(POLL)


# --- processes --------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time) of a live process, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None  # a zombie has exited; only its parent's wait is missing
    return int(fields[1]), int(fields[3]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _descendants(root: int) -> dict[int, int]:
    """Every live process below `root`: pid -> start time (guards against pid reuse)."""
    table = {pid: st for pid in _all_pids() if (st := _stat(pid)) is not None}
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def _survivors(session: int, tree: dict[int, int]) -> list[int]:
    """Processes of the tree, or of the service's session, still alive."""
    alive = [pid for pid, start in tree.items() if (st := _stat(pid)) and st[2] == start]
    in_session = [pid for pid in _all_pids() if (st := _stat(pid)) and st[1] == session]
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
            [*_cli(), *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def issue_token(self, org: str, principal: str, role: str) -> str:
        lines = self.cli("token", "issue", org, principal, "--role", role).strip().splitlines()
        token = lines[-1].strip()  # API.md: printed once, on a line of its own, last
        assert token and " " not in token, lines
        self.seen.add(token)
        return token

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

        return _await(probe, f"regeneration {regeneration_id}", 60.0)


@contextmanager
def running(workdir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    """`mfa-codes run` on a free port with nothing configured but a fresh MFA_VAR_DIR
    (and `extra_env`)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({"MFA_VAR_DIR": str(workdir / "var"), **FAST_ARGON2, **(extra_env or {})})
    log_path = workdir / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_cli(), "run", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and group, as a terminal would give it
        )
    svc = Service(proc, f"http://127.0.0.1:{port}", env, workdir, log_path)
    try:
        _await(lambda: svc.answers("/readyz"), "GET /readyz to answer 200", READY_WITHIN)
        yield svc
    finally:
        # Leave nothing behind, whatever happened: `run` itself if the test failed
        # before stopping it, and any orphan still in its session.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in _survivors(proc.pid, {}):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _interrupt(svc: Service, *, whole_group: bool) -> tuple[int, float, list[int]]:
    """SIGINT (Ctrl-C reaches the whole foreground group; `kill -INT` only `run`):
    (exit code, seconds to exit, processes left behind)."""
    tree = _descendants(svc.proc.pid)
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
    while (left := _survivors(svc.proc.pid, tree)) and time.monotonic() < end:
        time.sleep(POLL)
    return code, took, left


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def _assert_stopped(svc: Service, code: int, took: float, left: list[int]) -> None:
    tail = svc.log.read_text(errors="replace")[-3000:]
    assert code == 0, f"exit code {code}:\n{tail}"
    assert left == [], f"left behind: {[(pid, _cmdline(pid)) for pid in left]}\n{tail}"
    assert took < STOP_WITHIN, f"stopping took {took:.1f}s:\n{tail}"


def _pdf_codes(pdf: bytes) -> list[str]:
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return CODE_RE.findall(text)


def _leaked(text: str, secrets: set[str]) -> list[str]:
    """Secrets found in the text; a TOTP value only as a whole number, not inside one."""
    found = []
    for secret in secrets:
        if secret.isdigit():
            hit = re.search(rf"(?<![0-9A-Za-z]){secret}(?![0-9A-Za-z])", text) is not None
        else:
            hit = secret in text or secret.replace("-", "") in text
        if hit:
            found.append(secret[:3] + "...")
    return found


# --- the tests --------------------------------------------------------------------------


def test_enroll_regenerate_fetch_once_and_old_codes_refused(tmp_path: Path) -> None:
    with running(tmp_path) as svc:
        anonymous = svc.call("GET", "/v1/me/mfa")
        assert anonymous.status == 401
        assert anonymous.headers["Content-Type"].startswith("application/problem+json")
        assert anonymous.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert anonymous.headers.get("X-Request-Id")

        svc.cli("org", "create", "acme")
        svc.cli("user", "create", "acme", "alice", "--email", "alice@example.com")
        user = svc.issue_token("acme", "alice", "user")
        frontend = svc.issue_token("acme", "frontend", "service")

        # enrollment: the secret once, then a code from it confirms
        started = svc.call("POST", "/v1/me/mfa/enrollment", user)
        assert started.status == 201, started.body
        assert started.headers.get("Cache-Control") == "no-store"
        secret = started.json()["secret"]
        assert started.json()["otpauth_uri"].startswith("otpauth://totp/")
        svc.seen.add(secret)
        totp = pyotp.TOTP(secret)
        confirm_code = totp.now()
        confirmed = svc.call("POST", "/v1/me/mfa/enrollment/confirm", user, {"totp": confirm_code})
        assert confirmed.status == 201, confirmed.body
        first = confirmed.json()["regeneration"]
        assert first["reason"] == "enrollment" and first["code_count"] == 5
        assert svc.await_finished(user, first["id"])["status"] == "ready"

        # the first sheet as the printable PDF (the default)
        pdf = svc.call("GET", first["links"]["sheet"], user)
        assert pdf.status == 200, pdf.body
        assert pdf.headers["Content-Type"].startswith("application/pdf")
        assert pdf.headers.get("Cache-Control") == "no-store"
        assert re.search(
            r'filename="backup-codes-\d{4}-\d{2}-\d{2}\.pdf"', pdf.headers["Content-Disposition"]
        )
        first_codes = _pdf_codes(pdf.body)
        assert len(set(first_codes)) == 5, first_codes
        svc.seen.update(first_codes)

        verify = "/v1/users/alice/backup-codes/verify"
        spent = svc.call("POST", verify, frontend, {"code": first_codes[0]})
        assert spent.json() == {"accepted": True, "mistyped": False, "remaining": 4, "low": False}

        # regeneration with the next time step's code (the confirmed one is spent)
        next_code = totp.at(time.time() + 30)
        svc.seen.update({confirm_code, next_code})
        regen = svc.call("POST", "/v1/me/backup-codes/regenerations", user, {"totp": next_code})
        assert regen.status == 202, regen.body
        location = regen.headers["Location"]
        assert location == f"/v1/me/backup-codes/regenerations/{regen.json()['id']}"
        assert svc.await_finished(user, regen.json()["id"])["status"] == "ready"

        # its sheet exactly once: the text form, then 410 whatever the format
        text = svc.call("GET", location + "/sheet", user, accept="text/plain")
        assert text.status == 200, text.body
        new_codes = [line.strip() for line in text.body.decode().splitlines() if line.strip()]
        assert len(new_codes) == 5 and all(CODE_RE.fullmatch(c) for c in new_codes), new_codes
        assert not set(new_codes) & set(first_codes)
        svc.seen.update(new_codes)
        for accept in ("application/pdf", "text/plain"):
            again = svc.call("GET", location + "/sheet", user, accept=accept)
            assert again.status == 410 and again.json()["type"] == "/problems/sheet-gone"

        # old codes refused, a new one accepted in any case and without its separator, once
        old = svc.call("POST", verify, frontend, {"code": first_codes[1]})
        assert old.status == 200 and old.json()["accepted"] is False
        loose = f"  {new_codes[0].lower().replace('-', '')} "
        new = svc.call("POST", verify, frontend, {"code": loose})
        assert new.status == 200 and new.json() == {
            "accepted": True,
            "mistyped": False,
            "remaining": 4,
            "low": False,
        }
        reused = svc.call("POST", verify, frontend, {"code": new_codes[0]})
        assert reused.json()["accepted"] is False

        status = svc.call("GET", "/v1/me/mfa", user).json()
        assert status["enrolled"] is True
        assert status["backup_codes"]["remaining"] == 4 and status["backup_codes"]["total"] == 5
        svc.cli("audit", "verify", "--org", "acme")  # exit 0: the chain is intact

        # `kill -INT` of the supervisor alone: it must stop the API, worker and beat itself.
        _assert_stopped(svc, *_interrupt(svc, whole_group=False))
        assert _leaked(svc.log.read_text(), svc.seen) == []


def test_ctrl_c_at_a_terminal_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C: SIGINT to the whole foreground group, children included, after the API
    has served requests that published work (the state in which workers have hung)."""
    with running(tmp_path) as svc:
        svc.cli("org", "create", "acme")
        svc.cli("user", "create", "acme", "alice")
        user = svc.issue_token("acme", "alice", "user")
        started = svc.call("POST", "/v1/me/mfa/enrollment", user)
        assert started.status == 201, started.body
        totp = pyotp.TOTP(started.json()["secret"]).now()
        confirmed = svc.call("POST", "/v1/me/mfa/enrollment/confirm", user, {"totp": totp})
        assert confirmed.status == 201, confirmed.body
        svc.await_finished(user, confirmed.json()["regeneration"]["id"])
        _assert_stopped(svc, *_interrupt(svc, whole_group=True))
