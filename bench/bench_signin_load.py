"""Sign-in under load: POST /v1/users/{id}/backup-codes/verify with N concurrent clients
against a bare argon2id verification, on the same gunicorn configuration.

Both apps run at once under deploy/gunicorn.conf.py (gthread, 4 threads a worker,
the worker count from MFA_WEB_CONCURRENCY, default its own rule) with the same
settings on one fresh PostgreSQL database (the API publishing to RabbitMQ under a
queue prefix of this run's own, deleted at the end). Nothing is made cheaper than
in production: the default argon2id profile (19 MiB, t=2, p=1), the default
attempt limits, 4 verification slots a process.

- ours: the service token's verify calls, spread over USERS users of one
  organization, each holding a set of SET_SIZE codes with real argon2id hashes.
  One request in RIGHT_EVERY carries one of the user's unspent codes (accepted);
  the others a well-formed wrong code with one of the user's locators (so the
  stored hash is verified, and the failure counted and audited). Every request
  carries a client_ip of its own, and no user gets more than PER_USER requests
  (fewer failures than the per-user threshold): no attempt limit throttles, and
  the run checks that every right code was accepted and nothing refused.
- baseline: bench.baseline_app's POST /verify, which does nothing but one argon2id
  verification at the configured parameters (same mix of right and wrong codes).
- mistyped: verify calls whose input cannot be a code (8 symbols): no hash. They
  have a budget of their own per source (30 in 15 minutes), so each source sends
  MISTYPED_PER_SOURCE of them (its first is audited, once a minute per source).
- healthz: GET /healthz of the same API server, its cheapest answer.
- floor: bench.baseline_app's POST /counted with the mistyped requests' bodies and
  token: the API's token lookup and one INSERT, each its own autocommit statement,
  and nothing else. The least any input that is authenticated and counted in the
  database can cost here; its ratio to /healthz bounds what the mistyped case can
  reach on this machine.
- verify floor: bench.baseline_app's POST /verify-counted with the verify requests'
  codes (the baseline's) and token: the token lookup, one argon2id verification,
  one INSERT. The least a verification that is authenticated and recorded costs;
  its ratio to the baseline bounds the verify case the same way.

For each N in CLIENTS: N threads, each with one keep-alive http.client
connection; every case gets its REQUESTS (CHEAP_REQUESTS for the two cheap ones)
in ROUNDS rounds taken in turn with the other cases, so that drift in the
machine's load weighs on all alike. Rates are requests over wall time; p50/p99 are
per-request latencies seen by the client. Bars (issue 13): verify >= 0.8x the
baseline's verifications/s at every N; mistyped >= 0.5x /healthz's rate.

Last, the denial-of-service budget: single-thread argon2id verifications per second
in this process at the default parameters, i.e. the attempts one core absorbs; and
one PostgreSQL round trip (SELECT 1 in autocommit, median), the unit every
statement of the verify path pays.

    python -m bench.bench_signin_load
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

from bench.baseline_app import BASELINE_CODE
from bench.baseline_app import metadata as baseline_metadata
from bench.common import (
    delete_queues,
    fresh_postgres,
    gunicorn,
    markdown_table,
    percentile,
    require_services,
    run_together,
    server_env,
    settings_from,
)
from domain import accounts, audit, tokens
from domain import totp as otp
from domain.codes import CodeHasher, PlainCode, generate_codes
from domain.limits import Limits
from infra.db import make_engine
from infra.services import Services
from tests.support.builders import add_code_set, add_enrollment

CLIENTS = (1, 2, 4, 8)
REQUESTS = int(os.environ.get("BENCH_SIGNIN_LOAD_REQUESTS", "160"))  # per N and server
CHEAP_REQUESTS = int(os.environ.get("BENCH_SIGNIN_LOAD_CHEAP_REQUESTS", "480"))
# Per case, from 8 clients: enough that each of the servers' workers (5 a server on
# 2 cores) serves both kinds of code several times (16 left some workers' first
# requests, with their statements' first compile, to the measured rounds).
WARMUP = 80
ROUNDS = 4
RIGHT_EVERY = 4
PER_USER = 12  # 3 right, 9 wrong: below the per-user failure threshold (20 an hour)
SET_SIZE = PER_USER // RIGHT_EVERY + 1
MISTYPED_PER_SOURCE = 25  # below the per-source mistyped budget (30 in 15 minutes)
MISTYPED_INPUT = "ABCD-EFGH"  # a wrong length: cannot be a code
ARGON2_SAMPLES = 40
ROUND_TRIPS = 400
VERIFY_BAR = 0.8
MISTYPED_BAR = 0.5
ORG = "bench-signin"
API_TOKEN_PRINCIPAL = "signin-frontend"

assert Limits.user_threshold > PER_USER and Limits.mistyped_threshold > MISTYPED_PER_SOURCE


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    right: bool = False  # carries a code that must be accepted


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    accepted: int = 0
    mistyped: int = 0
    seconds: float = 0.0

    def add(self, other: Samples) -> None:
        self.latencies += other.latencies
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.accepted += other.accepted
        self.mistyped += other.mistyped


@dataclass(frozen=True)
class Load:
    per_s: float
    p50_ms: float
    p99_ms: float


def summary(samples: Samples) -> Load:
    return Load(
        per_s=len(samples.latencies) / samples.seconds,
        p50_ms=percentile(samples.latencies, 0.50),
        p99_ms=percentile(samples.latencies, 0.99),
    )


# --- load -------------------------------------------------------------------------


def _send(port: int, requests: list[Request], start: threading.Barrier, into: Samples) -> None:
    """One client: its requests one after another on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers: list[tuple[int, bytes]] = []
    start.wait()
    for req in requests:
        began = time.perf_counter()
        for attempt in (1, 2):
            try:
                conn.request(req.method, req.path, body=req.body, headers=req.headers)
                resp = conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect, once.
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                if attempt == 2:
                    raise
        into.latencies.append((time.perf_counter() - began) * 1000)
        answers.append((resp.status, payload))
    conn.close()
    for status, payload in answers:  # after the clock: parsing is the client's cost
        into.statuses[status] = into.statuses.get(status, 0) + 1
        body = json.loads(payload) if payload else {}
        into.accepted += body.get("accepted") is True
        into.mistyped += body.get("mistyped") is True


def drive(port: int, requests: list[Request], clients: int, into: Samples) -> None:
    """`requests` from `clients` threads (thread t sends requests[t::clients]), all
    starting together; answers and wall time added to `into`."""
    start = threading.Barrier(clients + 1)
    parts = [Samples() for _ in range(clients)]
    threads = [
        threading.Thread(target=_send, args=(port, requests[t::clients], start, parts[t]))
        for t in range(clients)
    ]
    into.seconds += run_together(threads, start)
    for part in parts:
        into.add(part)


# --- the requests -----------------------------------------------------------------


def _json(body: dict[str, str]) -> bytes:
    return json.dumps(body).encode()


def _wrong_code(codes: list[PlainCode]) -> str:
    """A well-formed code that is not in the set but has one of its locators, so
    verifying it costs the stored hash's verification (whatever the code format)."""
    locators = {c.locator for c in codes}
    values = {c.value for c in codes}
    for _ in range(1_000_000):
        candidate = generate_codes(1)[0]
        if candidate.locator in locators and candidate.value not in values:
            return candidate.display
    raise RuntimeError("no wrong code with a real locator found")


def _source(prefix: int, n: int) -> str:
    """A documentation address (2001:db8::/32) in a /64 of its own for each n: a
    source is an IPv6 address's /64 (domain.sources)."""
    return f"2001:db8:{prefix:x}{n // 65536:03x}:{n % 65536:x}::1"


def _user_schedules(services: Services, users: int) -> list[list[tuple[str, bool]]]:
    """Per user, its PER_USER verify inputs in order: (code as printed, right?);
    one in RIGHT_EVERY right. Users, enrollments and sets written directly."""
    schedules = []
    now = datetime.now(UTC)
    for u in range(users):
        codes = generate_codes(SET_SIZE)
        hashes = services.hasher.hash_all(codes)
        with services.unit_of_work() as uow:
            user = accounts.create_user(uow, ORG, f"user{u}", None, audit.CLI)
            add_enrollment(uow.session, services, user.id, otp.new_secret(), now)
            add_code_set(uow.session, user.id, list(zip(codes, hashes, strict=True)), now)
        right = iter(codes)
        schedules.append(
            [
                (next(right).display, True) if i % RIGHT_EVERY == 0 else (_wrong_code(codes), False)
                for i in range(PER_USER)
            ]
        )
    return schedules


def _verify_requests(
    schedules: list[list[tuple[str, bool]]], token: str
) -> tuple[list[Request], list[Request], list[Request]]:
    """(ours, baseline, verify floor) in the same order: request k goes to user
    k % users, so consecutive requests are for different users; the baseline and
    the floor get the same mix."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    plain = {"Content-Type": "application/json"}
    ours, base, floor = [], [], []
    for k in range(len(schedules) * PER_USER):
        user, turn = k % len(schedules), k // len(schedules)
        code, right = schedules[user][turn]
        body = {"code": code, "client_ip": _source(1, k), "user_agent": "bench"}
        path = f"/v1/users/user{user}/backup-codes/verify"
        ours.append(Request("POST", path, _json(body), headers, right))
        base_code = BASELINE_CODE if right else code
        base.append(Request("POST", "/verify", _json({"code": base_code}), plain, right))
        floor_body = _json({"code": base_code, "client_ip": body["client_ip"]})
        floor.append(Request("POST", "/verify-counted", floor_body, headers, right))
    return ours, base, floor


def _mistyped_requests(users: int, count: int, token: str) -> list[Request]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return [
        Request(
            "POST",
            f"/v1/users/user{k % users}/backup-codes/verify",
            _json({"code": MISTYPED_INPUT, "client_ip": _source(2, k // MISTYPED_PER_SOURCE)}),
            headers,
        )
        for k in range(count)
    ]


def _counted_requests(mistyped: list[Request]) -> list[Request]:
    """The mistyped requests' bodies and headers, sent to the baseline's /counted."""
    return [Request("POST", "/counted", r.body, r.headers) for r in mistyped]


# --- the run ----------------------------------------------------------------------


def round_trip_ms(database_url: str, samples: int = ROUND_TRIPS) -> float:
    """Median wall time of one autocommit SELECT 1 from this process."""
    engine = make_engine(database_url)
    took = []
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for _ in range(samples):
                began = time.perf_counter()
                conn.exec_driver_sql("SELECT 1").scalar()
                took.append((time.perf_counter() - began) * 1000)
    finally:
        engine.dispose()
    return percentile(took, 0.50)


def argon2_per_second(samples: int = ARGON2_SAMPLES) -> float:
    """Single-thread argon2id verifications per second at the default parameters."""
    hasher = CodeHasher()
    stored = hasher.hash(BASELINE_CODE)
    hasher.verify(stored, "warm-up")
    began = time.perf_counter()
    for _ in range(samples):
        hasher.verify(stored, BASELINE_CODE)
    return samples / (time.perf_counter() - began)


def _check(name: str, samples: Samples, expect_accepted: int, expect_mistyped: int) -> None:
    sent = len(samples.latencies)
    if samples.statuses != {200: sent}:
        raise RuntimeError(f"{name}: answers {samples.statuses}, expected 200 for all {sent}")
    if samples.accepted != expect_accepted or samples.mistyped != expect_mistyped:
        raise RuntimeError(
            f"{name}: {samples.accepted} accepted and {samples.mistyped} mistyped, "
            f"expected {expect_accepted} and {expect_mistyped}"
        )


class Cursor:
    """Hands out consecutive slices of a request list: no request is sent twice."""

    def __init__(self, requests: list[Request]) -> None:
        self.requests = requests
        self.at = 0

    def take(self, n: int) -> list[Request]:
        if self.at + n > len(self.requests):
            raise RuntimeError("ran out of prepared requests")
        out = self.requests[self.at : self.at + n]
        self.at += n
        return out


def measure(
    api: int,
    base: int,
    ours_reqs: list[Request],
    base_reqs: list[Request],
    cheap: list[Request],
    counted: list[Request],
    verify_floor: list[Request],
) -> dict[tuple[str, int], Load]:
    health = [Request("GET", "/healthz", None, {})] * (CHEAP_REQUESTS // ROUNDS)
    ours_at, base_at, cheap_at = Cursor(ours_reqs), Cursor(base_reqs), Cursor(cheap)
    floor_at, vfloor_at = Cursor(counted), Cursor(verify_floor)
    # Warm-up: each server's workers import, connect, compile and hash before anything counts.
    drive(base, base_at.take(WARMUP), 8, Samples())
    drive(api, ours_at.take(WARMUP), 8, Samples())
    drive(api, cheap_at.take(WARMUP), 8, Samples())
    drive(base, floor_at.take(WARMUP), 8, Samples())
    drive(base, vfloor_at.take(WARMUP), 8, Samples())
    results: dict[tuple[str, int], Load] = {}
    for n in CLIENTS:
        samples = {
            name: Samples() for name in ("base", "ours", "mistyped", "healthz", "floor", "vfloor")
        }
        right = {"base": 0, "ours": 0, "vfloor": 0}
        for _ in range(ROUNDS):
            for name, port, cursor in (
                ("base", base, base_at),
                ("ours", api, ours_at),
                ("vfloor", base, vfloor_at),
            ):
                batch = cursor.take(REQUESTS // ROUNDS)
                right[name] += sum(r.right for r in batch)
                drive(port, batch, n, samples[name])
            drive(api, cheap_at.take(CHEAP_REQUESTS // ROUNDS), n, samples["mistyped"])
            drive(api, health, n, samples["healthz"])
            drive(base, floor_at.take(CHEAP_REQUESTS // ROUNDS), n, samples["floor"])
        _check(f"baseline, {n} clients", samples["base"], right["base"], 0)
        _check(f"verify, {n} clients", samples["ours"], right["ours"], 0)
        _check(f"verify floor, {n} clients", samples["vfloor"], right["vfloor"], 0)
        _check(f"mistyped, {n} clients", samples["mistyped"], 0, CHEAP_REQUESTS)
        _check(f"floor, {n} clients", samples["floor"], 0, CHEAP_REQUESTS)
        for name, s in samples.items():
            results[(name, n)] = summary(s)
    return results


LABELS = {
    "base": "baseline: one argon2id verification",
    "ours": f"verify (1 in {RIGHT_EVERY} right)",
    "healthz": "GET /healthz",
    "mistyped": "verify, mistyped input (no hash)",
    "floor": "floor: token lookup + one INSERT (baseline app)",
    "vfloor": "verify floor: token lookup + argon2id + one INSERT (baseline app)",
}


def table(
    results: dict[tuple[str, int], Load], argon2_rate: float, round_trip: float
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n in CLIENTS:
        for name, against, bar in (
            ("base", None, None),
            ("ours", "base", VERIFY_BAR),
            ("vfloor", "base", None),
            ("healthz", None, None),
            ("mistyped", "healthz", MISTYPED_BAR),
            ("floor", "healthz", None),
        ):
            load = results[(name, n)]
            ratio = load.per_s / results[(against, n)].per_s if against else None
            verdict = (
                ""
                if bar is None or ratio is None
                else f"{'met' if ratio >= bar else 'MISSED'} {bar}x"
            )
            rows.append(
                {
                    "case": LABELS[name],
                    "clients": n,
                    "per_s": load.per_s,
                    "p50_ms": load.p50_ms,
                    "p99_ms": load.p99_ms,
                    "ratio": ratio,
                    "bar": verdict,
                }
            )
    rows.append(
        {
            "case": "argon2id verify, one thread in-process (attempts one core absorbs)",
            "clients": 1,
            "per_s": argon2_rate,
            "p50_ms": 1000 / argon2_rate,
            "p99_ms": None,
            "ratio": None,
            "bar": "",
        }
    )
    rows.append(
        {
            "case": "one PostgreSQL round trip (SELECT 1, autocommit, this process)",
            "clients": 1,
            "per_s": 1000 / round_trip,
            "p50_ms": round_trip,
            "p99_ms": None,
            "ratio": None,
            "bar": "",
        }
    )
    return rows


def run() -> list[dict[str, object]]:
    require_services(broker=True)
    verify_total = WARMUP + len(CLIENTS) * REQUESTS
    users = -(-verify_total // PER_USER)
    cheap_total = WARMUP + len(CLIENTS) * CHEAP_REQUESTS
    argon2_rate = argon2_per_second()  # before the servers start: nothing else of ours runs
    with fresh_postgres("bench_signin_load") as url, tempfile.TemporaryDirectory() as tmp:
        env = server_env(url, Path(tmp) / "var")
        settings = settings_from(env)
        log = Path(tmp) / "gunicorn.log"
        services = Services.build(settings)
        try:
            baseline_metadata.create_all(services.engine)  # the floor's INSERT
            with services.unit_of_work() as uow:
                accounts.create_org(uow, ORG, audit.CLI)
                _, token = tokens.issue(uow, ORG, API_TOKEN_PRINCIPAL, "service", audit.CLI)
            ours, base, verify_floor = _verify_requests(_user_schedules(services, users), token)
        finally:
            services.close()
        cheap = _mistyped_requests(users, cheap_total, token)
        counted = _counted_requests(cheap)
        round_trip = round_trip_ms(url)
        try:
            with (
                gunicorn("bench.baseline_app:application", env, log) as base_port,
                gunicorn("api.wsgi:application", env, log) as api_port,
            ):
                try:
                    results = measure(api_port, base_port, ours, base, cheap, counted, verify_floor)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}; gunicorn: {log.read_text()[-2000:]}") from None
        finally:
            delete_queues(settings)
    return table(results, argon2_rate, round_trip)


if __name__ == "__main__":
    print(markdown_table(run()))
