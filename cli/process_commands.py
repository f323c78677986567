"""run, serve, worker, beat: the service's processes.

`serve`, `worker` and `beat` are one role each (what the Docker image runs);
`run` is the embedded default: it migrates, then starts the three as its
children and stays in charge of them until interrupted.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from cli.common import handle_errors
from domain import logs
from domain.migrate import upgrade_settings
from domain.settings import Settings

log = logging.getLogger(__name__)

QUEUES = ("regeneration", "maintenance")
POOLS = ("prefork", "threads", "solo")
# SQLite has one writer at a time: more threads than this only queue for the lock.
SQLITE_CONCURRENCY = 2
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
WSGI_APP = "api.wsgi:application"
GUNICORN_CONF = "gunicorn.conf.py"
# Where the repository keeps it; the image copies it to /app/gunicorn.conf.py.
REPO_GUNICORN_CONF = Path(__file__).resolve().parents[1] / "deploy" / GUNICORN_CONF
# `run`: gunicorn processes for the embedded API (each holds its own database pool).
RUN_WEB_WORKERS = 2
# `run`: how long children get to finish after SIGTERM (a task at hand, a request).
# Longer than gunicorn's graceful_timeout (30 s), so requests in flight can finish.
STOP_GRACE_SECONDS = 35.0
# SIGHUP: the terminal closed; stop as for Ctrl-C rather than die without stopping.
WATCHED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD})
PR_SET_PDEATHSIG = 1


def _configure_logging(settings: Settings) -> None:
    """Our handler on the root logger, and Celery told to leave logging alone: with a
    receiver on `setup_logging` it configures nothing (worker children included)."""
    from celery import signals

    def take_over(**_: Any) -> None:
        logs.configure(settings.log_level, settings.log_json)

    take_over()
    signals.setup_logging.connect(take_over, weak=False)


# --- worker ---------------------------------------------------------------------


def default_pool(settings: Settings) -> str:
    """prefork on deployments; threads where a forked child could not share the
    embedded broker's folder or SQLite's file lock as safely."""
    return "threads" if settings.embedded_broker or settings.is_sqlite else "prefork"


def default_concurrency(settings: Settings, pool: str) -> int | None:
    """None lets Celery pick (one per CPU)."""
    if pool == "solo":
        return 1
    return SQLITE_CONCURRENCY if settings.is_sqlite else None


def queue_names(settings: Settings, wanted: Sequence[str]) -> list[str]:
    from workers.app import maintenance_queue, regeneration_queue

    full = {
        "regeneration": regeneration_queue(settings),
        "maintenance": maintenance_queue(settings),
    }
    return [full[name] for name in (wanted or QUEUES)]


@click.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Child processes or threads [default: one per CPU; 2 on SQLite].",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(POOLS),
    default=None,
    help="[default: prefork; threads with the embedded broker or SQLite].",
)
@click.option(
    "-Q",
    "--queue",
    "queues",
    multiple=True,
    type=click.Choice(QUEUES),
    help="Consume only this queue (repeatable) [default: both].",
)
@click.option("-n", "--hostname", default=None, help="Node name [default: celery@HOST].")
@handle_errors
def worker(
    concurrency: int | None, pool: str | None, queues: tuple[str, ...], hostname: str | None
) -> None:
    """A Celery worker: regenerations and maintenance."""
    from workers.runtime import build_worker

    settings = Settings.from_env()
    _configure_logging(settings)
    runtime = build_worker(settings)
    pool = pool or default_pool(settings)
    if concurrency is None:
        concurrency = default_concurrency(settings, pool)
    if pool == "prefork":
        # A forked child must open its own connections, never reuse the parent's.
        engine = runtime.services.engine
        os.register_at_fork(after_in_child=functools.partial(engine.dispose, close=False))
    names = queue_names(settings, queues)
    from workers import metrics

    metrics.connect()
    if settings.worker_metrics_port:
        # With prefork the tasks count in the children: PROMETHEUS_MULTIPROC_DIR
        # (set in the environment before start) lets this server add them up.
        metrics.serve_metrics(settings.worker_metrics_port)
    log.info(
        "worker starting: pool %s, concurrency %s, queues %s",
        pool,
        concurrency or "one per CPU",
        ", ".join(names),
    )
    celery_worker = runtime.celery.Worker(
        hostname=hostname,
        pool_cls=pool,
        concurrency=concurrency,
        loglevel=settings.log_level,
        queues=names,
        quiet=True,  # no banner on stdout: the logs say what matters
        # Gossip, mingle and heartbeats serve monitoring we do not use, and on the
        # embedded broker they would leave a queue per dead worker behind.
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    try:
        celery_worker.start()
    finally:
        runtime.close()
    sys.exit(celery_worker.exitcode)


# --- beat -----------------------------------------------------------------------


@click.command()
@handle_errors
def beat() -> None:
    """The scheduler (exactly one per deployment); its state file lives in MFA_VAR_DIR."""
    from workers.runtime import build_beat

    settings = Settings.from_env()
    _configure_logging(settings)
    celery_app = build_beat(settings)
    log.info("beat starting: %s", ", ".join(sorted(celery_app.conf.beat_schedule)))
    celery_app.Beat(
        loglevel=settings.log_level,
        schedule=celery_app.conf.beat_schedule_filename,
        quiet=True,
    ).run()


# --- serve ----------------------------------------------------------------------


def format_bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_conf(cwd: Path) -> Path | None:
    """The image's ./gunicorn.conf.py, else the repository's deploy/ copy."""
    for candidate in (cwd / GUNICORN_CONF, REPO_GUNICORN_CONF):
        if candidate.is_file():
            return candidate
    return None


def resolve_bind(
    host: str | None, port: int | None, env: Mapping[str, str], conf: Path | None, cwd: Path
) -> str | None:
    """--host/--port, else MFA_BIND, else the image's own config (which listens on
    every interface, as a container must), else 127.0.0.1:8000. None: leave it to
    the config file."""
    if host is not None or port is not None:
        return format_bind(host or DEFAULT_HOST, port or DEFAULT_PORT)
    if env.get("MFA_BIND"):
        return env["MFA_BIND"]
    if conf is not None and conf.parent == cwd:
        return None
    return format_bind(DEFAULT_HOST, DEFAULT_PORT)


def gunicorn_argv(
    host: str | None,
    port: int | None,
    web_workers: int | None,
    env: Mapping[str, str],
    cwd: Path,
) -> list[str]:
    conf = gunicorn_conf(cwd)
    argv = [sys.executable, "-m", "gunicorn"]
    if conf is not None:
        argv += ["-c", str(conf)]
    else:
        # The essentials of deploy/gunicorn.conf.py; no access log, so no query string
        # (which could hold anything) is ever written.
        argv += ["--worker-class", "gthread", "--threads", "4", "--timeout", "30"]
    bind = resolve_bind(host, port, env, conf, cwd)
    if bind is not None:
        argv += ["--bind", bind]
    if web_workers is not None:
        argv += ["--workers", str(web_workers)]
    elif conf is None:
        argv += ["--workers", "2"]
    return [*argv, WSGI_APP]


@click.command()
@click.option("--host", default=None, help="Interface to listen on [default: 127.0.0.1].")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="[default: 8000].")
@click.option("--workers", "web_workers", default=None, type=click.IntRange(1, 64))
@handle_errors
def serve(host: str | None, port: int | None, web_workers: int | None) -> None:
    """The HTTP API under gunicorn (replaces this process).

    Without --host/--port it listens where MFA_BIND says, else where the image's
    gunicorn.conf.py says, else on 127.0.0.1:8000."""
    Settings.from_env()  # bad settings fail here, with a message, not in every worker
    if importlib.util.find_spec("api.wsgi") is None:
        raise click.ClickException("the API module api.wsgi is missing from this install")
    argv = gunicorn_argv(host, port, web_workers, os.environ, Path.cwd())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 (our own fixed command line)


# --- run ------------------------------------------------------------------------


def _child_argv(*args: str) -> list[str]:
    # The same interpreter and environment as this process, whatever its entry point.
    return [sys.executable, "-c", "from cli.main import main; main()", *args]


def _preexec_for(libc: Any) -> Any:
    def setup() -> None:
        # Children start with the parent's blocked signals: give them theirs back.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        # Its own process group: a terminal's Ctrl-C reaches `run` alone, which stops
        # each child with one SIGTERM. (Gunicorn's workers, hit by SIGINT from the
        # terminal and SIGQUIT from their master at once, could deadlock.)
        os.setpgrp()
        if libc is not None:
            # If `run` itself is killed outright, its children get SIGTERM.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def _answers(host: str, port: int) -> bool:
    """True once the API answers HTTP at all (so its application has loaded)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    conn = http.client.HTTPConnection(target, port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    except OSError:
        return False
    finally:
        conn.close()
    return True


def _banner(url: str, settings: Settings) -> str:
    return f"""
mfa-backup-codes is running at {url}
  API, one worker and the scheduler; data under {settings.var_dir}. Ctrl-C stops them all.

Next steps, in another terminal (same directory and environment):
  mfa-codes org create acme
  mfa-codes user create acme alice --email alice@example.com
  TOKEN=$(mfa-codes token issue acme alice --role user)
  curl -s -X POST -H "Authorization: Bearer $TOKEN" {url}/v1/me/mfa/enrollment
  # add the secret to an authenticator app, then confirm with its current code:
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\
       -d '{{"totp":"123456"}}' {url}/v1/me/mfa/enrollment/confirm
  # the whole API: {url}/openapi.json
"""


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM to whoever is alive, SIGKILL after the grace period or a second signal."""
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while any(p.poll() is None for p in children.values()):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        info = signal.sigtimedwait(WATCHED, min(left, 1.0))
        if info is not None and info.si_signo != signal.SIGCHLD:
            log.warning("second stop signal: killing what is left")
            break
    for role, proc in children.items():
        if proc.poll() is None:
            log.warning("%s did not stop in time: killed", role)
        # The whole group: a stuck grandchild (a gunicorn worker) must not outlive us.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def supervise(settings: Settings, host: str, port: int) -> int:
    """Start the API, a worker and the beat; the exit code of the whole."""
    try:
        libc: Any = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    except OSError:
        libc = None
    # Blocked before the children start, so no signal slips between spawning and
    # waiting; sigtimedwait then takes them synchronously.
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for role, args in (
            ("worker", ("worker",)),
            ("beat", ("beat",)),
            (
                "api",
                ("serve", "--host", host, "--port", str(port), "--workers", str(RUN_WEB_WORKERS)),
            ),
        ):
            children[role] = subprocess.Popen(_child_argv(*args), preexec_fn=_preexec_for(libc))
        url = f"http://{format_bind(host, port)}"
        announced = False
        while True:
            dead = next((r for r, p in children.items() if p.poll() is not None), None)
            if dead is not None:
                if signal.sigpending() & {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}:
                    return_code = 0  # the terminal's Ctrl-C reached the child first
                else:
                    log.error(
                        "%s stopped (exit code %s): stopping the others",
                        dead,
                        children[dead].returncode,
                    )
                    return_code = 1
                break
            if not announced and _answers(host, port):
                click.echo(_banner(url, settings))
                announced = True
            info = signal.sigtimedwait(WATCHED, 5.0 if announced else 0.25)
            if info is not None and info.si_signo != signal.SIGCHLD:
                log.info("stopping on %s", signal.Signals(info.si_signo).name)
                return_code = 0
                break
    finally:
        _stop(children)
        # Take what is still pending (a Ctrl-C seen above, SIGCHLDs) before unblocking,
        # or it would be delivered as a KeyboardInterrupt on the way out.
        while signal.sigtimedwait(WATCHED, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
    return return_code


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@handle_errors
def run(host: str, port: int) -> None:
    """The embedded default: migrate, then API, worker and scheduler together."""
    settings = Settings.from_env()  # also creates the embedded key files, once
    logs.configure(settings.log_level, settings.log_json)
    upgrade_settings(settings)
    sys.exit(supervise(settings, host, port))
