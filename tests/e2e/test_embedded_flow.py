"""The whole flow over HTTP against `mfa-codes run` started as a subprocess.

enrollment -> first sheet -> regeneration -> sheet exactly once -> old codes refused.
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from pypdf import PdfReader

from tests.conftest import FAST_ARGON2, TEST_SECRET_KEY

CODE_RE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b")
DEADLINE = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli() -> list[str]:
    exe = shutil.which("mfa-codes", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "cli"]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)


@dataclass
class Service:
    base: str
    env: dict[str, str]
    cwd: Path

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*_cli(), *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())


def _await(predicate, what: str, deadline: float = DEADLINE):  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("embedded")
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MFA_") or k.startswith("MFA_TEST")
    }
    env.update({"MFA_VAR_DIR": str(workdir / "var"), "MFA_SECRET_KEY": TEST_SECRET_KEY})
    env.update(FAST_ARGON2)
    log = open(workdir / "run.log", "wb")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(
        [*_cli(), "run", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    svc = Service(f"http://127.0.0.1:{port}", env, workdir)
    try:
        _await(
            lambda: proc.poll() is not None or _healthy(svc),
            "the service to answer /healthz",
        )
        assert proc.poll() is None, (workdir / "run.log").read_text()
        yield svc
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _healthy(svc: Service) -> bool:
    try:
        return svc.call("GET", "/healthz").status == 200
    except OSError:
        return False


def _ready(svc: Service, token: str, regeneration_id: str) -> dict:  # type: ignore[type-arg]
    def check() -> dict | None:  # type: ignore[type-arg]
        body = svc.call("GET", f"/v1/me/backup-codes/regenerations/{regeneration_id}", token).json()
        return body if body["status"] in ("ready", "failed") else None

    return _await(check, f"regeneration {regeneration_id} to finish")


def test_enroll_regenerate_fetch_once_and_old_codes_refused(service: Service) -> None:
    service.cli("org", "create", "acme")
    service.cli("user", "create", "acme", "alice", "--email", "alice@example.com")
    user_token = service.cli("token", "issue", "acme", "alice", "--role", "user").split()[-1]
    signin_token = service.cli("token", "issue", "acme", "frontend", "--role", "service").split()[
        -1
    ]

    # enrollment
    started = service.call("POST", "/v1/me/mfa/enrollment", user_token)
    assert started.status == 201, started.body
    assert started.headers.get("Cache-Control") == "no-store"
    secret = started.json()["secret"]
    totp = pyotp.TOTP(secret)
    now = datetime.now(UTC)
    confirmed = service.call(
        "POST", "/v1/me/mfa/enrollment/confirm", user_token, {"totp": totp.at(now)}
    )
    assert confirmed.status == 201, confirmed.body
    first = confirmed.json()["regeneration"]
    assert first["reason"] == "enrollment" and first["code_count"] == 5

    done = _ready(service, user_token, first["id"])
    assert done["status"] == "ready", done
    sheet = service.call(
        "GET", first["links"]["sheet"], user_token, headers={"Accept": "text/plain"}
    )
    assert sheet.status == 200
    first_codes = sheet.body.decode().split()
    assert len(first_codes) == 5 and all(CODE_RE.fullmatch(c) for c in first_codes)

    # regeneration, with the next step's code (the confirmed step can never be used again)
    regen = service.call(
        "POST",
        "/v1/me/backup-codes/regenerations",
        user_token,
        {"totp": totp.at(now + timedelta(seconds=30))},
    )
    assert regen.status == 202, regen.body
    location = regen.headers["Location"]
    assert location.endswith(regen.json()["id"])
    done = _ready(service, user_token, regen.json()["id"])
    assert done["status"] == "ready", done

    pdf = service.call(
        "GET", location + "/sheet", user_token, headers={"Accept": "application/pdf"}
    )
    assert pdf.status == 200
    assert pdf.headers["Content-Type"].startswith("application/pdf")
    assert re.search(
        r'filename="backup-codes-\d{4}-\d{2}-\d{2}\.pdf"', pdf.headers["Content-Disposition"]
    )
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.body)).pages)
    new_codes = CODE_RE.findall(text)
    assert len(new_codes) == 5 and not set(new_codes) & set(first_codes)

    # exactly once
    again = service.call("GET", location + "/sheet", user_token)
    assert again.status == 410 and again.json()["type"] == "/problems/sheet-gone"

    verify = "/v1/users/alice/backup-codes/verify"
    old = service.call("POST", verify, signin_token, {"code": first_codes[0]})
    assert old.status == 200 and old.json()["accepted"] is False
    new = service.call("POST", verify, signin_token, {"code": new_codes[0].lower()})
    assert new.status == 200 and new.json() == {"accepted": True, "remaining": 4, "low": False}
    reused = service.call("POST", verify, signin_token, {"code": new_codes[0]})
    assert reused.json()["accepted"] is False

    status = service.call("GET", "/v1/me/mfa", user_token).json()
    assert status["enrolled"] is True
    assert status["backup_codes"]["remaining"] == 4 and status["backup_codes"]["total"] == 5


def test_unauthenticated_calls_get_problem_json(service: Service) -> None:
    resp = service.call("GET", "/v1/me/mfa")
    assert resp.status == 401
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert resp.headers.get("X-Request-Id")
