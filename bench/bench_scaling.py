"""Worker scaling: regenerations drained per second by 1 and by 2 worker processes.

Each worker is `mfa-codes worker --concurrency 1 -Q regeneration` (prefork, one
child), over a fresh PostgreSQL database and RabbitMQ, with the default argon2id
profile and 5 codes. Per case: the workers start and drain a few warm-up
regenerations (so start-up is not timed); then REGENERATIONS requests are
written through the intake use case with their publish held back, and the clock
runs from publishing them (the outbox sweep, one burst) until the last one is
finished. Every one must end `ready`: a request queued for a while is still
judged for the moment it was accepted.

The machine has 2 cores and the database, the broker and this process share
them: 2 processes cannot reach 2x here; the ratio says how close they get.

    python -m bench.bench_scaling
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select

from bench.common import (
    delete_queues,
    enrolled_people,
    fresh_postgres,
    markdown_table,
    request_now,
    require_services,
    server_env,
    settings_from,
)
from domain.models import Regeneration
from infra.services import Services
from tests.support.builders import Person
from tests.support.processes import MFA_CODES
from workers.app import make_celery
from workers.publish import Publisher

REGENERATIONS = int(os.environ.get("BENCH_SCALING_REGENERATIONS", "100"))
PROCESSES = (1, 2)
WARMUP_PER_PROCESS = 2
DRAIN_TIMEOUT = 300.0
POLL_SECONDS = 0.02


def _tree_cpu_seconds(roots: list[int]) -> float | None:
    """CPU seconds (user + system) of these processes and their children (the prefork
    pool), from /proc; None where there is no /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(entry.name) in roots or int(fields[1]) in roots:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextmanager
def _workers(count: int, env: dict[str, str], log: Path) -> Iterator[list[int]]:
    full_env = {**os.environ, **env}
    procs = []
    with log.open("ab") as out:
        for i in range(count):
            procs.append(
                subprocess.Popen(
                    [
                        str(MFA_CODES),
                        "worker",
                        "--concurrency",
                        "1",
                        "-Q",
                        "regeneration",
                        "-n",
                        f"bench{count}-{i}@%h",
                    ],
                    env=full_env,
                    stdout=out,
                    stderr=out,
                )
            )
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.terminate()  # Celery's warm shutdown: the task at hand finishes
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _await_finished(services: Services, ids: list[str], log: Path) -> float:
    """Polls until every id is finished; the monotonic time it saw them all finished."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    query = (
        select(func.count())
        .select_from(Regeneration)
        .where(Regeneration.id.in_(ids), Regeneration.status.in_(("ready", "failed")))
    )
    while True:
        with services.engine.connect() as conn:
            done = conn.execute(query).scalar_one()
        now = time.monotonic()
        if done == len(ids):
            return now
        if now > deadline:
            raise RuntimeError(
                f"{done} of {len(ids)} finished after {DRAIN_TIMEOUT:.0f}s; "
                f"worker log: {log.read_text()[-2000:]}"
            )
        time.sleep(POLL_SECONDS)


def _statuses(services: Services, ids: list[str]) -> dict[str, int]:
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(Regeneration.status, func.count())
            .where(Regeneration.id.in_(ids))
            .group_by(Regeneration.status)
        ).all()
    return {status: n for status, n in rows}


def _drain(
    services: Services,
    publisher: Publisher,
    people: Iterator[Person],
    pids: list[int],
    log: Path,
) -> tuple[float, float | None]:
    """(regenerations/s, the workers' CPU ms per regeneration): warm up, then publish
    REGENERATIONS at once and time the drain."""
    count = len(pids)
    publisher.install()
    try:
        warm = [request_now(services, next(people)) for _ in range(WARMUP_PER_PROCESS * count)]
    finally:
        publisher.uninstall()
    _await_finished(services, warm, log)
    ids = [request_now(services, next(people)) for _ in range(REGENERATIONS)]
    cpu_before = _tree_cpu_seconds(pids)
    started = time.monotonic()
    sent = publisher.flush_pending(None)
    if sent != REGENERATIONS:
        raise RuntimeError(f"published {sent} of {REGENERATIONS}")
    finished = _await_finished(services, ids, log)
    cpu_after = _tree_cpu_seconds(pids)
    statuses = _statuses(services, ids)
    if statuses != {"ready": REGENERATIONS}:
        raise RuntimeError(f"{count} worker(s): {statuses}, expected all ready")
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None:
        cpu_ms = (cpu_after - cpu_before) * 1000 / REGENERATIONS
    return REGENERATIONS / (finished - started), cpu_ms


def run() -> list[dict[str, object]]:
    require_services(broker=True)
    per_case = REGENERATIONS + WARMUP_PER_PROCESS * max(PROCESSES)
    rates: dict[int, tuple[float, float | None]] = {}
    load_1m = os.getloadavg()[0]
    with fresh_postgres("bench_scaling") as url, tempfile.TemporaryDirectory() as tmp:
        env = server_env(url, Path(tmp) / "var")
        settings = settings_from(env)
        services = Services.build(settings)
        log = Path(tmp) / "workers.log"
        try:
            people = iter(enrolled_people(services, 1, per_case * len(PROCESSES), with_codes=True))
            publisher = Publisher(make_celery(settings), services)
            for count in PROCESSES:
                with _workers(count, env, log) as pids:
                    rates[count] = _drain(services, publisher, people, pids, log)
        finally:
            services.close()
            delete_queues(settings)
    one = rates[PROCESSES[0]][0]
    return [
        {
            "workers": f"{count} x `mfa-codes worker --concurrency 1`",
            "regenerations": REGENERATIONS,
            "per_s": rate,
            "wall_ms_each": 1000 / rate,
            "worker_cpu_ms_each": cpu_ms,
            "scaling": rate / one,
            "load_1m_at_start": load_1m,
        }
        for count, (rate, cpu_ms) in rates.items()
    ]


if __name__ == "__main__":
    print(markdown_table(run()))
