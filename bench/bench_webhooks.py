"""Webhooks: deliveries/s against a bare loop of the same POSTs, and what webhooks add
to a regeneration's intake.

1. Deliveries: DELIVERIES rows queued for one webhook on a fresh PostgreSQL database,
   then delivered one after another in this process by the delivery task's own code
   (workers.deliveries.deliver_once: claim in a transaction, decrypt the secret, sign,
   POST through the SSRF-guarded client, record in a transaction) to a local receiver
   that answers at once, THREADS at a time as `run`'s delivery worker does. The
   baseline is a bare loop of the same POSTs (same body, headers and a new connection
   each, as the client makes) with http.client from one process. Bar: >= 0.5x the baseline's rate.
2. Intake: a regeneration request (domain use case, as POST regenerations runs it, no
   publish) in an organization with 2 webhooks against one with none, taking turns.
   Bar: <= 1.2x.

    python -m bench.bench_webhooks
"""

from __future__ import annotations

import http.client
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.common import (
    enrolled_people,
    fresh_postgres,
    markdown_table,
    request_now,
    require_services,
    server_env,
    settings_from,
)
from domain import audit
from domain.clock import utcnow
from domain.models import new_id
from domain.notify import signing, webhook_admin, webhook_rules, webhooks
from domain.notify.webhook_addresses import AllowPrivate
from infra.migrate import upgrade
from infra.services import Services
from infra.webhook_client import WebhookClient
from workers.deliveries import deliver_once

DELIVERIES = int(os.environ.get("BENCH_WEBHOOK_DELIVERIES", "400"))
INTAKES = int(os.environ.get("BENCH_WEBHOOK_INTAKES", "150"))
ROUNDS = 5
# As many at once as `mfa-codes run`'s delivery worker has threads.
THREADS = int(os.environ.get("BENCH_WEBHOOK_THREADS", "4"))


@contextmanager
def quick_receiver() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _bare_posts(port: int, n: int, body: bytes, secret: str) -> float:
    headers = {"Content-Type": "application/json", **signing.headers("m", body, [secret], 1)}
    started = time.perf_counter()
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/hook", body=body, headers=headers)
        conn.getresponse().read(65536)
        conn.close()
    return n / (time.perf_counter() - started)


def _queued(services: Services, org_id: str, url: str, n: int) -> tuple[list[int], str, bytes]:
    with services.unit_of_work() as uow:
        hook, secret = webhook_admin.create(
            uow, services.box, org_id, url, ["*"], "", AllowPrivate.LOOPBACK, audit.CLI, utcnow()
        )
        ids = []
        for _ in range(n):
            out = webhook_rules.ping(org_id, new_id(), utcnow())
            ids.append(webhooks.queue(uow, hook, out, utcnow()).id)
        body = signing.encode_body(out.body)
    return ids, secret, body


def _deliveries(services: Services, port: int, org_id: str) -> dict[str, object]:
    client = WebhookClient(AllowPrivate.LOOPBACK)
    url = f"http://127.0.0.1:{port}/hook"
    ids, secret, body = _queued(services, org_id, url, DELIVERIES)
    warm, ids = ids[:20], ids[20:]
    for delivery_id in warm:
        deliver_once(services, client, delivery_id)
    _bare_posts(port, 20, body, secret)
    rates, bare = [], []
    chunk = len(ids) // ROUNDS
    for r in range(ROUNDS):
        part = ids[r * chunk : (r + 1) * chunk]
        started = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            for recorded in pool.map(lambda i: deliver_once(services, client, i), part):
                assert recorded is not None and recorded.outcome == "succeeded"
        rates.append(len(part) / (time.perf_counter() - started))
        bare.append(_bare_posts(port, len(part), body, secret))
    ours, base = sorted(rates)[ROUNDS // 2], sorted(bare)[ROUNDS // 2]
    return {
        "case": "deliveries/s to a local receiver",
        "ours": ours,
        "baseline": base,
        "ratio": ours / base,
        "bar": ">= 0.5x",
        "met": ours / base >= 0.5,
    }


def _intake(services: Services) -> dict[str, object]:
    plain = enrolled_people(services, 1, INTAKES)
    hooked = enrolled_people(services, 1, INTAKES)
    for _ in range(2):
        with services.unit_of_work() as uow:
            webhook_admin.create(
                uow,
                services.box,
                hooked[0].org_id,
                "http://127.0.0.1:9/hook",
                ["*"],
                "",
                AllowPrivate.LOOPBACK,
                audit.CLI,
                utcnow(),
            )
    times: dict[str, list[float]] = {"none": [], "two": []}
    for a, b in zip(plain, hooked, strict=True):  # taking turns
        for name, person in (("none", a), ("two", b)):
            started = time.perf_counter()
            request_now(services, person)
            times[name].append(time.perf_counter() - started)
    none = sorted(times["none"])[len(times["none"]) // 2] * 1000
    two = sorted(times["two"])[len(times["two"]) // 2] * 1000
    return {
        "case": "regeneration intake, median ms (2 webhooks vs none)",
        "ours": two,
        "baseline": none,
        "ratio": two / none,
        "bar": "<= 1.2x",
        "met": two / none <= 1.2,
    }


def run() -> list[dict[str, object]]:
    require_services(broker=False)
    with fresh_postgres("bench_webhooks") as url, tempfile.TemporaryDirectory() as tmp:
        settings = settings_from(server_env(url, Path(tmp), MFA_WEBHOOK_ALLOW_PRIVATE="loopback"))
        upgrade(settings.database_url)
        services = Services.build(settings)
        try:
            with quick_receiver() as port:
                org_id = enrolled_people(services, 1, 1)[0].org_id
                rows = [_deliveries(services, port, org_id)]
            rows.append(_intake(services))
        finally:
            services.close()
    return rows


if __name__ == "__main__":
    print(markdown_table(run()))
