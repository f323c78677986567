"""Token lookup: what authenticating a request costs now (expiry, revocation and
last_used_at) against the lookup before them (a plain select by hash).

Both run the request's authentication as api.auth does it: one autocommit
connection from the pool, a session on it, the SHA-256 of the presented token,
one SELECT by hash. Before: that row is the answer. Now: api.auth.authenticate
itself, which also refuses an expired or revoked row and, at most once a
minute a token, writes last_used_at (a conditional UPDATE that waits for no
lock). Three cases, taking turns (bench.common.interleaved_ms) on the same
database in the same run, among TOKENS tokens of one organization:

- before: the plain select by hash;
- now, the steady state: the token was used within the minute, nothing is written;
- now, a token's first request of its minute: the read, then the one UPDATE
  (each sample takes a token not used yet).

On PostgreSQL (the deployment) and on the embedded SQLite. Ratios are against
the plain select of the same database and run.

    python -m bench.bench_token_lookup
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from falcon import testing
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import auth
from bench.common import fresh_postgres, interleaved_ms, require_services, settings_from
from domain import accounts, audit, tokens
from domain.models import ApiToken
from infra.migrate import upgrade
from infra.services import Services
from tests.support.settings import new_signing_key

TOKENS = int(os.environ.get("BENCH_TOKEN_LOOKUP_TOKENS", "2000"))
REPEAT = int(os.environ.get("BENCH_TOKEN_LOOKUP_REPEAT", "1500"))
BEFORE = "before: plain select by hash"
STEADY = "now: + expiry, revocation, last_used_at fresh (no write)"
FIRST = "now: a token's first request of its minute (one UPDATE)"


def _services(database_url: str, var_dir: Path) -> Services:
    from cryptography.fernet import Fernet

    env = {
        "MFA_VAR_DIR": str(var_dir),
        "MFA_DATABASE_URL": database_url,
        "MFA_SECRET_KEY": Fernet.generate_key().decode(),
        "MFA_AUDIT_SIGNING_KEY": new_signing_key(),
        "MFA_LOG_LEVEL": "WARNING",
    }
    return Services.build(settings_from(env))


def _issue_many(services: Services, count: int) -> list[str]:
    org_id = "bench-tokens"
    with services.unit_of_work() as uow:
        accounts.create_org(uow, org_id, audit.CLI)
    made = []
    for start in range(0, count, 200):
        with services.unit_of_work() as uow:
            for n in range(start, min(count, start + 200)):
                _, plaintext = tokens.issue(uow, org_id, f"svc-{n}", "service", audit.CLI)
                made.append(plaintext)
    return made


def _before(services: Services, presented: str) -> Callable[[], object]:
    """The lookup as it was: the same request and header parsing, one autocommit read
    by hash, and the row is the answer."""

    def lookup() -> object:
        req = testing.create_req(headers={"Authorization": f"Bearer {presented}"})
        bearer = auth._bearer(req)
        assert bearer is not None
        digest = hashlib.sha256(bearer.encode()).hexdigest()
        with (
            services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
            Session(bind=conn) as session,
        ):
            row = session.execute(
                select(ApiToken).where(ApiToken.token_hash == digest)
            ).scalar_one_or_none()
            assert row is not None
            return row.id

    return lookup


def _now(services: Services, presented: Callable[[], str]) -> Callable[[], object]:
    """api.auth.authenticate itself, on a request carrying the token."""

    def lookup() -> object:
        req = testing.create_req(headers={"Authorization": f"Bearer {presented()}"})
        return auth.authenticate(req, services, "127.0.0.1").token_id

    return lookup


def _measure(services: Services) -> dict[str, float]:
    issued = _issue_many(services, TOKENS + REPEAT + 10)
    steady, unused = issued[0], iter(issued[1:])
    # The steady token was used just now: its last_used_at is fresh for the run's minute.
    _now(services, lambda: steady)()
    with services.unit_of_work() as uow:
        row = tokens.authenticate(uow.session, steady)
        assert row is not None and row.last_used_at is not None
        assert not tokens.due_for_use_mark(row, datetime.now(UTC))
    return interleaved_ms(
        {
            BEFORE: _before(services, issued[-1]),
            STEADY: _now(services, lambda: steady),
            FIRST: _now(services, lambda: next(unused)),
        },
        repeat=REPEAT,
    )


@contextmanager
def _databases() -> Iterator[tuple[str, str, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(sqlite_url)
        with fresh_postgres("bench_tokens") as pg_url:
            yield pg_url, sqlite_url, Path(tmp)


def run() -> list[dict[str, object]]:
    require_services(broker=False)
    rows: list[dict[str, object]] = []
    with _databases() as (pg_url, sqlite_url, tmp):
        for backend, url in (("PostgreSQL", pg_url), ("SQLite", sqlite_url)):
            services = _services(url, tmp / backend)
            try:
                times = _measure(services)
            finally:
                services.close()
            base = times[BEFORE]
            for case, ms in times.items():
                rows.append(
                    {"database": backend, "case": case, "median_ms": ms, "ratio": ms / base}
                )
    return rows


if __name__ == "__main__":
    from bench.common import markdown_table

    print(markdown_table(run()))
