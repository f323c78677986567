"""run, serve, worker, beat: the service's processes.

`serve`, `worker` and `beat` are one role each (what the Docker image runs);
`run` is the embedded default: it migrates, then starts the three as its
children and stays in charge of them until interrupted.
"""

from __future__ import annotations

import functools
import http.client
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import click

from cli.common import handle_errors
from cli.supervise import ChildSpec, Supervisor
from infra import logs
from infra.migrate import upgrade_settings
from infra.settings import Settings

log = logging.getLogger(__name__)

QUEUES = ("regeneration", "maintenance", "deliveries")
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
# gunicorn worker classes `serve --worker-class` offers. `run` has no proxy in front, so
# it uses waitress's, which reads whole requests before a thread sees them: a client
# trickling its request holds a socket, not a thread (deploy/gunicorn.conf.py).
WORKER_CLASSES = {"gthread": "gthread", "waitress": "api.waitress_worker.WaitressWorker"}
RUN_WORKER_CLASS = "waitress"


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
    from workers.app import deliveries_queue, maintenance_queue, regeneration_queue

    full = {
        "regeneration": regeneration_queue(settings),
        "maintenance": maintenance_queue(settings),
        "deliveries": deliveries_queue(settings),
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
    help="Consume only this queue (repeatable) [default: all three].",
)
@click.option("-n", "--hostname", default=None, help="Node name [default: celery@HOST].")
@handle_errors
def worker(
    concurrency: int | None, pool: str | None, queues: tuple[str, ...], hostname: str | None
) -> None:
    """A Celery worker: regenerations, maintenance and deliveries (webhooks)."""
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
    worker_class: str | None = None,
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
    if worker_class is not None:
        argv += ["--worker-class", WORKER_CLASSES[worker_class]]
    return [*argv, WSGI_APP]


def prepare_api_metrics(settings: Settings, env: MutableMapping[str, str]) -> None:
    """With MFA_API_METRICS_PORT, the workers' samples go to PROMETHEUS_MULTIPROC_DIR
    for the master to add up: an emptied one under MFA_VAR_DIR unless one is given."""
    from api.metrics_port import MULTIPROC_ENV, fresh_multiproc_dir

    if settings.api_metrics_port and not env.get(MULTIPROC_ENV):
        env[MULTIPROC_ENV] = str(fresh_multiproc_dir(settings.var_dir / "metrics" / "api"))


@click.command()
@click.option("--host", default=None, help="Interface to listen on [default: 127.0.0.1].")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="[default: 8000].")
@click.option("--workers", "web_workers", default=None, type=click.IntRange(1, 64))
@click.option(
    "--worker-class",
    type=click.Choice(sorted(WORKER_CLASSES)),
    default=None,
    help="waitress reads whole requests before a thread takes them (for no proxy in "
    "front) [default: gunicorn.conf.py's, gthread].",
)
@handle_errors
def serve(
    host: str | None, port: int | None, web_workers: int | None, worker_class: str | None
) -> None:
    """The HTTP API under gunicorn (replaces this process).

    Without --host/--port it listens where MFA_BIND says, else where the image's
    gunicorn.conf.py says, else on 127.0.0.1:8000. MFA_API_METRICS_PORT serves
    the metrics of all its processes on a port of their own."""
    settings = Settings.from_env()  # bad settings fail here, with a message
    if importlib.util.find_spec("api.wsgi") is None:
        raise click.ClickException("the API module api.wsgi is missing from this install")
    if settings.api_metrics_port and gunicorn_conf(Path.cwd()) is None:
        raise click.ClickException("MFA_API_METRICS_PORT needs gunicorn.conf.py (its hooks)")
    prepare_api_metrics(settings, os.environ)
    argv = gunicorn_argv(host, port, web_workers, os.environ, Path.cwd(), worker_class)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 (our own fixed command line)


# --- run ------------------------------------------------------------------------


def _child_argv(*args: str) -> list[str]:
    # The same interpreter and environment as this process, whatever its entry point.
    return [sys.executable, "-c", "from cli.main import main; main()", *args]


def _answers(host: str, port: int) -> bool:
    """True once the API answers HTTP at all (so its application has loaded)."""
    # A wildcard address is asked on loopback; nothing is bound here.
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (see above)
    conn = http.client.HTTPConnection(target, port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):  # not up yet, or not speaking HTTP yet
        return False
    finally:
        conn.close()
    return True


def _banner(url: str, settings: Settings) -> str:
    return f"""
mfa-backup-codes is running at {url}
  API, the workers and the scheduler; data under {settings.var_dir}. Ctrl-C stops them all.

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


# `run`'s delivery worker: a receiver that hangs holds one of these threads for at
# most the client's 10 s, never the regeneration worker.
RUN_DELIVERY_THREADS = 4


def run_children(host: str, port: int) -> list[ChildSpec]:
    """What `run` starts and keeps running."""
    return [
        ChildSpec("worker", _child_argv("worker", "-Q", "regeneration", "-Q", "maintenance")),
        ChildSpec(
            "deliveries",
            _child_argv(
                *("worker", "-Q", "deliveries", "-n", "deliveries@%h"),
                *("-P", "threads", "-c", str(RUN_DELIVERY_THREADS)),
            ),
        ),
        ChildSpec("beat", _child_argv("beat")),
        ChildSpec(
            "api",
            _child_argv(
                *("serve", "--host", host, "--port", str(port)),
                *("--workers", str(RUN_WEB_WORKERS), "--worker-class", RUN_WORKER_CLASS),
            ),
        ),
    ]


def supervise(settings: Settings, host: str, port: int) -> int:
    """Start the API, the workers and the beat, restart one that dies; the exit code."""
    url = f"http://{format_bind(host, port)}"
    announced = False

    def tick() -> float:
        nonlocal announced
        if not announced and _answers(host, port):
            click.echo(_banner(url, settings))
            announced = True
        return 5.0 if announced else 0.25

    return Supervisor(run_children(host, port)).run(tick)


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@handle_errors
def run(host: str, port: int) -> None:
    """The embedded default: migrate, then API, workers and scheduler together."""
    settings = Settings.from_env()  # also creates the embedded key files, once
    logs.configure(settings.log_level, settings.log_json)
    upgrade_settings(settings)
    sys.exit(supervise(settings, host, port))
