"""Audit trail: what the chain costs an append, and how fast a long chain verifies.

Baseline: the same row inserted without the chain (no head lock, no hash), one
transaction each, on the same database in the same run. Runs on a fresh
PostgreSQL database when one answers at BENCH_POSTGRES_URL, else on SQLite.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, update

from bench.common import POSTGRES_URL, fresh_postgres, markdown_table
from domain import audit
from domain.audit.checkpoints import checkpoint_org
from domain.audit.export import ndjson_chunks, stream_events
from domain.audit.query import Filters
from domain.audit.types import EventType, Outcome
from domain.audit.verify import verify_chain
from domain.models import AuditEvent, AuditHead, new_id
from infra.db import make_engine, make_session_factory, unit_of_work
from infra.migrate import upgrade
from infra.settings import Settings
from tests.support.services import reachable

# The Table itself (a Core insert of plain rows); `AuditEvent.__table__` is typed as any FromClause.
AUDIT_EVENTS: Table = AuditEvent.metadata.tables["audit_events"]
APPENDS = int(os.environ.get("BENCH_AUDIT_APPENDS", "2000"))
CHAIN = int(os.environ.get("BENCH_AUDIT_CHAIN", "100000"))
SMALL_CHAIN = CHAIN // 10
CTX = audit.Context(
    principal_id="alice", role="user", token_id=str(uuid.uuid4()), request_id="r", source_ip="::1"
)


@contextmanager
def _database() -> Iterator[tuple[str, str]]:
    """A fresh, migrated database: (label, url); dropped afterwards."""
    if reachable(POSTGRES_URL, 5432, timeout=1):
        with fresh_postgres("bench_audit") as url:
            yield "PostgreSQL", url
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            yield "SQLite", url


def _settings(tmp: Path, url: str) -> Settings:
    env = {"MFA_VAR_DIR": str(tmp), "MFA_DATABASE_URL": url, "MFA_BROKER_URL": "filesystem://"}
    return Settings.from_env(env=env, dotenv=None)


def _plain_row(org_id: str, seq: int) -> dict[str, Any]:
    return {
        "id": new_id(),
        "org_id": org_id,
        "seq": seq,
        "occurred_at": datetime.now(UTC),
        "type": EventType.CODE_ACCEPTED,
        "outcome": Outcome.SUCCESS,
        "actor_principal_id": CTX.principal_id,
        "actor_role": CTX.role,
        "actor_token_id": CTX.token_id,
        "user_id": "alice",
        "request_id": CTX.request_id,
        "source_ip": CTX.source_ip,
        "user_agent": None,
        "details": {"remaining": 4},
        "prev_hash": "",
        "hash": "",
    }


def _appends_per_second(sessions: Any, chained: bool, n: int) -> float:
    org = f"bench-{uuid.uuid4().hex[:8]}"
    if chained:
        with unit_of_work(sessions) as uow:
            audit.ensure_head(uow.session, org)
    start = time.perf_counter()
    for seq in range(1, n + 1):
        with unit_of_work(sessions) as uow:
            if chained:
                audit.append(
                    uow,
                    org,
                    EventType.CODE_ACCEPTED,
                    Outcome.SUCCESS,
                    CTX,
                    user_id="alice",
                    details={"remaining": 4},
                )
            else:
                uow.session.execute(insert(AUDIT_EVENTS), [_plain_row(org, seq)])
    return n / (time.perf_counter() - start)


def _build_chain(sessions: Any, org: str, n: int) -> None:
    """A valid chain of n events, hashed here and inserted in bulk (fast to set up)."""
    prev = audit.GENESIS_HASH
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch: list[dict[str, Any]] = []
    for seq in range(1, n + 1):
        row = _plain_row(org, seq)
        row["occurred_at"] = start + timedelta(milliseconds=seq)
        row["type"] = EventType.CODE_ACCEPTED if seq % 3 else EventType.REGENERATION_REQUESTED
        row["details"] = {"remaining": seq % 5, "n": seq}
        row["prev_hash"] = prev
        row["hash"] = prev = audit.chain_hash(AuditEvent(**row), prev)
        batch.append(row)
        if len(batch) == 5000 or seq == n:
            with unit_of_work(sessions) as uow:
                uow.session.execute(insert(AUDIT_EVENTS), batch)
            batch = []
    with unit_of_work(sessions) as uow:
        audit.ensure_head(uow.session, org)
        uow.session.execute(
            update(AuditHead).where(AuditHead.org_id == org).values(seq=n, hash=prev)
        )


def _verify(sessions: Any, org: str, settings: Settings) -> tuple[float, int]:
    start = time.perf_counter()
    with unit_of_work(sessions) as uow:
        result = verify_chain(uow.session, org, settings)
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"benchmark chain does not verify: {result.reason}")
    return elapsed, result.events_checked


def _traced_peak_kib(fn: Any) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def run() -> list[dict[str, object]]:
    with _database() as (label, url), tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp), url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            _appends_per_second(sessions, True, 50)  # warm-up: connections, statement cache
            plain = _appends_per_second(sessions, False, APPENDS)
            chained = _appends_per_second(sessions, True, APPENDS)

            small, big = f"small-{uuid.uuid4().hex[:6]}", f"big-{uuid.uuid4().hex[:6]}"
            _build_chain(sessions, small, SMALL_CHAIN)
            _build_chain(sessions, big, CHAIN)
            # Both signed: events older than twice the interval must be (audit_verify).
            with unit_of_work(sessions) as uow:
                checkpoint_org(uow, settings, small, datetime.now(UTC))
                checkpoint_org(uow, settings, big, datetime.now(UTC))
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            seconds, checked = _verify(sessions, big, settings)
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_small = _traced_peak_kib(lambda: _verify(sessions, small, settings))
            peak_big = _traced_peak_kib(lambda: _verify(sessions, big, settings))

            export_start = time.perf_counter()
            exported = sum(
                len(chunk)
                for chunk in ndjson_chunks(
                    stream_events(lambda: unit_of_work(sessions), big, Filters(max_seq=CHAIN))
                )
            )
            export_seconds = time.perf_counter() - export_start
        finally:
            engine.dispose()
    return [
        {"measure": f"plain insert, 1 txn each ({label}, baseline)", "per_s": plain, "ratio": 1.0},
        {
            "measure": "append with the chain, 1 txn each",
            "per_s": chained,
            "ratio": chained / plain,
        },
        {
            "measure": f"verify {checked:,} events (s = {seconds:.2f})",
            "per_s": checked / seconds,
            "ratio": None,
        },
        {
            "measure": f"verify: traced peak KiB, {SMALL_CHAIN:,} vs {CHAIN:,} events",
            "per_s": None,
            "ratio": f"{peak_small:.0f} vs {peak_big:.0f} KiB ({peak_big / peak_small:.2f}x)",
        },
        {
            "measure": "verify: max RSS grew by (KiB)",
            "per_s": None,
            "ratio": rss_after - rss_before,
        },
        {
            "measure": f"NDJSON export of {CHAIN:,} events ({exported / 2**20:.1f} MiB)",
            "per_s": CHAIN / export_seconds,
            "ratio": None,
        },
    ]


if __name__ == "__main__":
    print(markdown_table(run()))
