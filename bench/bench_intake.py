"""Intake: POST /v1/me/backup-codes/regenerations against a bare Falcon INSERT.

Both apps run under the same gunicorn command and config (deploy/gunicorn.conf.py:
gthread, 4 threads a worker, the worker count from MFA_WEB_CONCURRENCY, default
its own rule) on one fresh PostgreSQL database, the API publishing to RabbitMQ
under a queue prefix of this run's own (queues deleted at the end). No worker
runs: intake only queues (the TOTP is judged later, by the worker).

Load: CLIENTS threads, each with one keep-alive http.client connection and its own
users. Both servers run at once; each case gets WARMUP requests, then REQUESTS
timed ones in ROUNDS rounds taken in turn with the other cases. The
API's requests carry a user's bearer token and a TOTP of the moment; the
baseline gets the same body and headers. Requests/s is REQUESTS over the wall
time; p50/p99 are per-request latencies seen by the client.

The API runs twice: all users in one organization (every intake append waits
for the one audit chain head of the organization) and spread over CLIENTS
organizations. The bar (docs/architecture.md): intake >= 0.5x the baseline's requests/s,
held to the one-organization case.

    python -m bench.bench_intake
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.baseline_app import metadata as baseline_metadata
from bench.common import (
    delete_queues,
    enrolled_people,
    fresh_postgres,
    gunicorn,
    markdown_table,
    percentile,
    require_services,
    run_together,
    server_env,
    settings_from,
)
from domain import audit, tokens
from infra.db import make_engine
from infra.services import Services
from tests.support.builders import Person

CLIENTS = int(os.environ.get("BENCH_INTAKE_CLIENTS", "8"))
REQUESTS = int(os.environ.get("BENCH_INTAKE_REQUESTS", "1600"))
WARMUP = int(os.environ.get("BENCH_INTAKE_WARMUP", "200"))
# A user has one regeneration pending at a time (no worker runs here): every request
# of a case goes to a user of its own.
USERS_PER_CLIENT = -(-(WARMUP + REQUESTS) // CLIENTS)
ROUNDS = 4
BAR = 0.5
INTAKE_PATH = "/v1/me/backup-codes/regenerations"


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]


@dataclass(frozen=True)
class Caller:
    token: str
    body: bytes  # {"totp": ...}: the TOTP of the moment the run was set up


def _client(
    port: int,
    path: str,
    callers: list[Caller],
    offset: int,
    count: int,
    start: threading.Barrier,
    latencies: list[float],
    statuses: dict[int, int],
    lock: threading.Lock,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    mine: list[float] = []
    seen: dict[int, int] = {}
    start.wait()
    for i in range(count):
        caller = callers[(offset + i) % len(callers)]
        headers = {
            "Authorization": f"Bearer {caller.token}",
            "Content-Type": "application/json",
        }
        began = time.perf_counter()
        for attempt in (1, 2):
            try:
                conn.request("POST", path, body=caller.body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect, once.
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                if attempt == 2:
                    raise
        mine.append((time.perf_counter() - began) * 1000)
        seen[resp.status] = seen.get(resp.status, 0) + 1
    conn.close()
    with lock:
        latencies.extend(mine)
        for status, n in seen.items():
            statuses[status] = statuses.get(status, 0) + n


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> Load:
        return Load(
            rps=len(self.latencies) / self.seconds,
            p50_ms=percentile(self.latencies, 0.50),
            p99_ms=percentile(self.latencies, 0.99),
            statuses=self.statuses,
        )


def _load(
    port: int, path: str, callers: list[Caller], offset: int, total: int, into: Samples
) -> None:
    """`total` requests from CLIENTS threads, each from its `offset`-th user on;
    latencies, answers and wall time into `into`."""
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + 1)
    per_client = total // CLIENTS
    threads = [
        threading.Thread(
            target=_client,
            args=(
                port,
                path,
                callers[c::CLIENTS],
                offset,
                per_client,
                start,
                into.latencies,
                into.statuses,
                lock,
            ),
        )
        for c in range(CLIENTS)
    ]
    into.seconds += run_together(threads, start)


def _measure(cases: dict[str, tuple[int, str, list[Caller]]]) -> dict[str, Load]:
    """Every case warmed up, then ROUNDS rounds in turn, so that drift in the machine's
    load (other processes) weighs on every case alike."""
    used = dict.fromkeys(cases, 0)  # requests each thread has sent in a case: users used
    for name, (port, path, callers) in cases.items():
        _load(port, path, callers, used[name], WARMUP, Samples())
        used[name] += WARMUP // CLIENTS
    samples = {name: Samples() for name in cases}
    for _ in range(ROUNDS):
        for name, (port, path, callers) in cases.items():
            _load(port, path, callers, used[name], REQUESTS // ROUNDS, samples[name])
            used[name] += (REQUESTS // ROUNDS) // CLIENTS
    expected = {202: ROUNDS * ((REQUESTS // ROUNDS) // CLIENTS) * CLIENTS}
    loads = {name: s.summary() for name, s in samples.items()}
    for name, load in loads.items():
        if load.statuses != expected:
            raise RuntimeError(f"{name}: answers {load.statuses}, expected {expected}")
    return loads


def _callers(services: Services, people: list[Person]) -> list[Caller]:
    now = datetime.now(UTC)
    callers = []
    for person in people:
        with services.unit_of_work() as uow:
            _, token = tokens.issue(uow, person.org_id, person.external_id, "user", audit.CLI)
        callers.append(Caller(token, json.dumps({"totp": person.code(now)}).encode()))
    return callers


def _row(name: str, load: Load, base: Load) -> dict[str, object]:
    return {
        "server": name,
        "req_per_s": load.rps,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "ratio": load.rps / base.rps,
    }


def run() -> list[dict[str, object]]:
    require_services(broker=True)
    users = CLIENTS * USERS_PER_CLIENT
    with fresh_postgres("bench_intake") as url, tempfile.TemporaryDirectory() as tmp:
        env = server_env(url, Path(tmp) / "var")
        settings = settings_from(env)
        log = Path(tmp) / "gunicorn.log"
        services = Services.build(settings)
        try:
            # Thread c's users sit at c::CLIENTS: one organization, or one per thread.
            one_org = _callers(services, enrolled_people(services, 1, users))
            spread = enrolled_people(services, CLIENTS, USERS_PER_CLIENT)
            interleaved = [
                spread[o * USERS_PER_CLIENT + u]
                for u in range(USERS_PER_CLIENT)
                for o in range(CLIENTS)
            ]
            many_orgs = _callers(services, interleaved)
        finally:
            services.close()
        engine = make_engine(url)
        baseline_metadata.create_all(engine)
        engine.dispose()
        try:
            with (
                gunicorn("bench.baseline_app:application", env, log) as base_port,
                gunicorn("api.wsgi:application", env, log) as api_port,
            ):
                try:
                    loads = _measure(
                        {
                            "base": (base_port, "/insert", one_org),
                            "ours": (api_port, INTAKE_PATH, one_org),
                            "spread": (api_port, INTAKE_PATH, many_orgs),
                        }
                    )
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}; gunicorn: {log.read_text()[-2000:]}") from None
        finally:
            delete_queues(settings)
    base, ours, spread_load = loads["base"], loads["ours"], loads["spread"]
    ratio = ours.rps / base.rps
    verdict = "met" if ratio >= BAR else "MISSED"
    workers = os.environ.get("MFA_WEB_CONCURRENCY") or "config default"
    return [
        _row(f"bare Falcon INSERT + commit (baseline; workers: {workers})", base, base),
        _row(f"intake, {users} users in 1 org ({verdict}: bar {BAR}x)", ours, base),
        _row(f"intake, {users} users in {CLIENTS} orgs", spread_load, base),
    ]


if __name__ == "__main__":
    print(markdown_table(run()))
