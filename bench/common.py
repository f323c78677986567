"""Shared helpers for the benchmarks: timing, markdown tables, and for the pipeline
benchmarks a fresh PostgreSQL database, settings and enrolled users."""

from __future__ import annotations

import http.client
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet

from domain import accounts, audit, regeneration
from domain import totp as otp
from domain.codes import generate_codes
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import Person, add_code_set, add_enrollment
from tests.support.postgres import fresh_postgres_database, owner_url
from tests.support.processes import free_port
from tests.support.services import reachable
from tests.support.settings import new_signing_key
from workers.app import make_celery


def median_ms(fn: Callable[[], object], repeat: int = 15, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(h)) for h in headers) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


# --- shared by the pipeline benchmarks (worker, intake, scaling) -------------------

POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
CTX = audit.Context(
    principal_id="bench", role="user", token_id="tok-bench", request_id="r", source_ip="::1"
)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 2,000 samples is the 1,980th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def interleaved_ms(
    cases: dict[str, Callable[[], object]], repeat: int, warmup: int = 2
) -> dict[str, float]:
    """Median ms per case, the cases taking turns, so that drift in the machine's
    load weighs on every case alike."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def require_services(*, broker: bool) -> None:
    if not reachable(POSTGRES_URL, 5432, timeout=1):
        raise RuntimeError("needs PostgreSQL at BENCH_POSTGRES_URL")
    if broker and not reachable(AMQP_URL, 5672, timeout=1):
        raise RuntimeError("needs RabbitMQ at BENCH_AMQP_URL")


@contextmanager
def fresh_postgres(prefix: str) -> Iterator[str]:
    """The tests' scratch database on BENCH_POSTGRES_URL, as its owner: the
    benchmarks write rows and tables of their own (the baseline's) directly, and
    always ran as the owner. Dropped afterwards, its sessions ended."""
    with fresh_postgres_database(prefix, server_url=POSTGRES_URL) as app_url:
        yield owner_url(app_url, POSTGRES_URL)


def server_env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """MFA_* settings for PostgreSQL + RabbitMQ with fresh keys and a queue prefix of
    this run's own (so nothing mixes with a deployment's queues). The default argon2id
    profile: nothing here is made cheaper than in production."""
    return {
        "MFA_VAR_DIR": str(var_dir),
        "MFA_DATABASE_URL": database_url,
        "MFA_BROKER_URL": AMQP_URL,
        "MFA_SECRET_KEY": Fernet.generate_key().decode(),
        "MFA_AUDIT_SIGNING_KEY": new_signing_key(),
        "MFA_QUEUE_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        "MFA_LOG_LEVEL": "WARNING",
        **extra,
    }


def settings_from(env: dict[str, str]) -> Settings:
    return Settings.from_env(env=env, dotenv=None)


def enrolled_people(
    services: Services, orgs: int, per_org: int, *, with_codes: bool = False
) -> list[Person]:
    """Organizations and users with a confirmed TOTP enrollment, written directly (the
    enrollment flow's own cost is not what these benchmarks measure). With
    `with_codes`, each user also holds an active set of 5 codes, as a regenerating
    user does (placeholder hashes: nothing ever verifies them)."""
    people: list[Person] = []
    now = datetime.now(UTC)
    for o in range(orgs):
        org_id = f"bench-{uuid.uuid4().hex[:8]}-{o}"
        with services.unit_of_work() as uow:
            accounts.create_org(uow, org_id, audit.CLI)
        for u in range(per_org):
            secret = otp.new_secret()
            with services.unit_of_work() as uow:
                user = accounts.create_user(uow, org_id, f"user{u}", None, audit.CLI)
                codes = [(c, PLACEHOLDER_HASH) for c in generate_codes(5)] if with_codes else []
                add_enrollment(uow.session, services, user.id, secret, now)
                add_code_set(uow.session, user.id, codes, now)
            people.append(Person(org_id, f"user{u}", secret))
    return people


# An argon2id string of the usual length; seeded "existing" codes are never verified.
PLACEHOLDER_HASH = "$argon2id$v=19$m=19456,t=2,p=1$" + "A" * 22 + "$" + "B" * 43


def request_now(services: Services, person: Person) -> str:
    """Queue one regeneration with the TOTP of this moment (intake's use case)."""
    now = datetime.now(UTC)
    with services.unit_of_work() as uow:
        user = accounts.get_user(uow.session, person.org_id, person.external_id)
        outcome = regeneration.request_regeneration(
            uow, services, user, person.code(now), None, now, CTX
        )
        return outcome.regeneration.id


def delete_queues(settings: Settings) -> None:
    """Remove this run's queues and exchanges (and the messages no worker consumed)."""
    from workers.app import maintenance_queue, regeneration_queue

    with make_celery(settings).connection_for_write() as conn:
        channel = conn.channel()
        for name in (regeneration_queue(settings), maintenance_queue(settings)):
            # The transport's channel has them; kombu's StdChannel interface declares neither.
            channel.queue_delete(name)  # type: ignore[attr-defined]
            channel.exchange_delete(name)  # type: ignore[attr-defined]


# --- gunicorn, as `mfa-codes serve` runs it (intake, sign-in load) ------------------

GUNICORN_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
GUNICORN_START_TIMEOUT = 30.0


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


@contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path) -> Iterator[int]:
    """`python -m gunicorn -c deploy/gunicorn.conf.py APP` on a free local port: the
    API (`api.wsgi:application`) and the baselines (bench.baseline_app) alike."""
    port = free_port()
    full_env = {**os.environ, **env, "MFA_BIND": f"127.0.0.1:{port}", "MFA_LOG_LEVEL": "warning"}
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG), app],
            env=full_env,
            stdout=subprocess.DEVNULL,  # the access log: one line a request, for both apps
            stderr=err,
        )
    try:
        deadline = time.monotonic() + GUNICORN_START_TIMEOUT
        while not healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not start; see {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_together(threads: Sequence[threading.Thread], start: threading.Barrier) -> float:
    """Start the client threads, release them at once (each waits on `start`, whose
    last party is this caller) and return the wall time until the last one ends."""
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - began
