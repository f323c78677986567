"""Time from POST to ready: one request at a time through the real pipeline.

The API (create_app, in this process, publishing to RabbitMQ after commit) takes
POST /v1/me/backup-codes/regenerations; one `mfa-codes worker --concurrency 1`
process (prefork) over the same fresh PostgreSQL database does the work; the
client polls GET …/{id} every POLL_SECONDS until `ready`. The baseline, measured
in the same run, is the worker's own time for a regeneration (its started and
succeeded events, taken before its two commits, so it leaves those out): the ratio is
what intake, the queue, the broker, the commits and polling add.

    python -m bench.bench_latency
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from falcon import testing
from sqlalchemy import select

from api.app import create_app
from bench.common import (
    delete_queues,
    enrolled_people,
    fresh_postgres,
    markdown_table,
    percentile,
    require_services,
    server_env,
    settings_from,
)
from domain import audit, tokens
from domain.audit.types import EventType
from domain.models import AuditEvent
from infra.services import Services
from tests.support.processes import MFA_CODES

SAMPLES = int(os.environ.get("BENCH_LATENCY_SAMPLES", "30"))
WARMUP = 3
POLL_SECONDS = 0.005
TIMEOUT = 60.0


def _worker_ms(services: Services, regeneration_id: str) -> float:
    """The worker's time for one regeneration: from its started to its succeeded event."""
    with services.unit_of_work() as uow:
        rows = uow.session.execute(
            select(AuditEvent.type, AuditEvent.occurred_at).where(
                AuditEvent.type.in_(
                    (EventType.REGENERATION_STARTED, EventType.REGENERATION_SUCCEEDED)
                ),
                AuditEvent.details["regeneration_id"].as_string() == regeneration_id,
            )
        ).all()
    at = {kind: moment for kind, moment in rows}
    span = at[EventType.REGENERATION_SUCCEEDED] - at[EventType.REGENERATION_STARTED]
    return span.total_seconds() * 1000


def run() -> list[dict[str, object]]:
    require_services(broker=True)
    with fresh_postgres("bench_latency") as url, tempfile.TemporaryDirectory() as tmp:
        env = server_env(url, Path(tmp) / "var")
        settings = settings_from(env)
        services = Services.build(settings)
        log = (Path(tmp) / "worker.log").open("wb")
        worker = subprocess.Popen(
            [str(MFA_CODES), "worker", "--concurrency", "1"],
            env={**os.environ, **env},
            stdout=log,
            stderr=log,
        )
        try:
            people = enrolled_people(services, 1, SAMPLES + WARMUP, with_codes=True)
            with services.unit_of_work() as uow:
                bearer = [
                    tokens.issue(uow, p.org_id, p.external_id, "user", audit.CLI)[1] for p in people
                ]
            client = testing.TestClient(create_app(settings, services))
            latencies, worker_ms = [], []
            for i, (person, token) in enumerate(zip(people, bearer, strict=True)):
                headers = {"Authorization": f"Bearer {token}"}
                started = time.perf_counter()
                got = client.simulate_post(
                    "/v1/me/backup-codes/regenerations",
                    json={"totp": person.code(datetime.now(UTC))},
                    headers=headers,
                )
                if got.status_code != 202:
                    raise RuntimeError(f"intake answered {got.status_code}: {got.text}")
                location = got.headers["location"]
                deadline = time.monotonic() + TIMEOUT
                while (status := client.simulate_get(location, headers=headers).json["status"]) in (
                    "queued",
                    "processing",
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"still {status} after {TIMEOUT:.0f}s")
                    time.sleep(POLL_SECONDS)
                elapsed = (time.perf_counter() - started) * 1000
                if status != "ready":
                    raise RuntimeError(f"ended {status}")
                if i >= WARMUP:  # the worker's first tasks open its connections
                    latencies.append(elapsed)
                    worker_ms.append(_worker_ms(services, got.json["id"]))
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            log.close()
            services.close()
            delete_queues(settings)
    base = percentile(worker_ms, 0.5)
    return [
        {
            "measure": "the worker's own time, started to succeeded (baseline)",
            "p50_ms": base,
            "p95_ms": percentile(worker_ms, 0.95),
            "ratio": 1.0,
        },
        {
            "measure": f"POST to ready, a client polling every {POLL_SECONDS * 1000:.0f} ms",
            "p50_ms": percentile(latencies, 0.5),
            "p95_ms": percentile(latencies, 0.95),
            "ratio": percentile(latencies, 0.5) / base,
        },
    ]


def main() -> None:
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
