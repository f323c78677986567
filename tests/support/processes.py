"""Subprocesses of the service (`mfa-codes run`/`serve`/`worker`, gunicorn): the
console script, a free port, and the environment they start with."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from infra.settings import Settings
from tests.support.settings import FAST_ARGON2

# The .venv's console script, next to this interpreter.
MFA_CODES = Path(sys.executable).with_name("mfa-codes")


def mfa_codes() -> list[str]:
    """The command line that starts the console script (checked to be there)."""
    exe = shutil.which("mfa-codes", path=str(MFA_CODES.parent))
    assert exe, f"no mfa-codes console script beside {sys.executable}"
    return [exe]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**mfa: str) -> dict[str, str]:
    """This process's environment without its MFA_* settings (nor a
    PROMETHEUS_MULTIPROC_DIR), then `mfa`: a child sees only what the test gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFA_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(mfa)
    return env


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A test's settings as a child's environment (Settings.from_env's names), with
    cheap argon2 and then `extra`."""
    return child_env(
        **FAST_ARGON2,
        MFA_DATABASE_URL=settings.database_url,
        MFA_BROKER_URL=settings.broker_url,
        MFA_SECRET_KEY=",".join(settings.secret_keys),
        MFA_AUDIT_SIGNING_KEY=base64.b64encode(settings.audit_signing_key).decode(),
        MFA_VAR_DIR=str(settings.var_dir),
        MFA_QUEUE_PREFIX=settings.queue_prefix,
        **extra,
    )


def stop_group(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    """`sig` to the child's process group (it was started in a session of its own),
    then SIGKILL if it has not exited within `timeout` seconds."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
