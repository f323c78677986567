"""Request throttles counted in the database, so they hold across processes.

A fixed one-minute window per key: one UPSERT a counted event (request_throttles,
primary key (key, window_start)). Only failures are counted, never a request
that succeeds, so the hot path pays nothing:

- failed token authentications (no, unknown, expired or revoked token):
  30 a minute per source address, then 429 instead of 401;
- refused calls (403 and 404 answers): 60 a minute per (token, source), then
  429 instead of the refusal, checked before the refusal's audit event is
  appended, so a flood of refusals never queues on the chain head's lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain.errors import TooManyAttempts
from domain.models import RequestThrottle
from domain.sources import source_key
from domain.sql import rowcount

WINDOW_SECONDS = 60
AUTH_FAILURES_PER_MINUTE = 30
REFUSALS_PER_MINUTE = 60
MAX_KEY = 200


@dataclass(frozen=True)
class Verdict:
    count: int
    limit: int
    retry_after: int  # seconds until the window ends

    @property
    def over(self) -> bool:
        return self.count > self.limit


def _window(now: float) -> tuple[int, int]:
    start = int(now) // WINDOW_SECONDS * WINDOW_SECONDS
    return start, max(1, start + WINDOW_SECONDS - int(now))


def auth_failure_key(source_ip: str | None) -> str:
    return f"auth:{source_key(None, source_ip)}"[:MAX_KEY]


def refusal_key(token_id: str | None, source_ip: str | None) -> str:
    return f"refused:{token_id or '-'}:{source_key(None, source_ip)}"[:MAX_KEY]


def hit(session: Session, key: str, limit: int, now: float | None = None) -> Verdict:
    """Count one event for key in the current window; the count includes it."""
    start, retry_after = _window(time.time() if now is None else now)
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    upsert = (
        insert(RequestThrottle)
        .values(key=key, window_start=start, count=1)
        .on_conflict_do_update(
            index_elements=["key", "window_start"],
            set_={"count": RequestThrottle.count + 1},
        )
        .returning(RequestThrottle.count)
    )
    count = int(session.execute(upsert).scalar_one())
    if count == 1:
        # A new window for this key: its older ones are of no use. Only this key's rows
        # (the primary key's prefix), so two keys never wait for each other; keys not
        # seen again are left to purge().
        session.execute(
            delete(RequestThrottle).where(
                RequestThrottle.key == key, RequestThrottle.window_start < start
            )
        )
    return Verdict(count, limit, retry_after)


def purge(session: Session, now: float | None = None) -> int:
    """Delete every window that ended before the current one began (the beat's sweep)."""
    start, _ = _window(time.time() if now is None else now)
    result = session.execute(
        delete(RequestThrottle).where(RequestThrottle.window_start < start - WINDOW_SECONDS)
    )
    return rowcount(result)


def peek(session: Session, key: str, limit: int, now: float | None = None) -> Verdict:
    """The current window's count for key, without counting (a read)."""
    start, retry_after = _window(time.time() if now is None else now)
    count = session.execute(
        select(RequestThrottle.count).where(
            RequestThrottle.key == key, RequestThrottle.window_start == start
        )
    ).scalar_one_or_none()
    return Verdict(int(count or 0), limit, retry_after)


def refusal_gate(session: Session, token_id: str | None, source_ip: str | None) -> None:
    """Before a refusal's audit event: a (token, source) over its minute's refusals
    gets 429 instead, and the chain is not touched. The refusal itself is counted
    once its answer is sent (api.middleware), audited or not."""
    verdict = peek(session, refusal_key(token_id, source_ip), REFUSALS_PER_MINUTE)
    if verdict.count >= verdict.limit:
        raise TooManyAttempts(verdict.retry_after, "Too many refused calls; slow down")
