"""infra.db.KeptConnections on a real PostgreSQL: a thread keeps its connection while
it keeps using it, gives it back after PING_AFTER_IDLE_SECONDS idle, never reuses
one that failed, and no more than `most` threads keep one."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError

from infra.db import PING_AFTER_IDLE_SECONDS, KeptConnections, autocommit
from infra.services import Services
from infra.settings import Settings


def backend(kept: KeptConnections) -> int:
    with kept.connection() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


class Checkouts:
    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "checkout", self._seen)
        self.engine = engine

    def _seen(self, *_: object) -> None:
        self.count += 1

    def stop(self) -> None:
        event.remove(self.engine, "checkout", self._seen)


@pytest.mark.postgres
def test_a_thread_keeps_its_connection_between_uses(pg_services: Services) -> None:
    kept = KeptConnections(pg_services.engine, 2)
    seen = Checkouts(pg_services.engine)
    try:
        pids = {backend(kept) for _ in range(5)}
    finally:
        seen.stop()
        kept.close_mine()
    assert len(pids) == 1 and seen.count == 1
    assert kept.kept == 0  # given back


@pytest.mark.postgres
def test_statements_commit_on_their_own(pg_services: Services) -> None:
    kept = KeptConnections(pg_services.engine, 1)
    try:
        with kept.connection() as conn:
            in_txn = conn.exec_driver_sql("SELECT now() = statement_timestamp()").scalar_one()
        # Autocommit: each statement is its own transaction (now() is its own start).
        assert in_txn is True
    finally:
        kept.close_mine()


@pytest.mark.postgres
def test_an_idle_thread_gives_its_connection_back_first(pg_services: Services) -> None:
    kept = KeptConnections(pg_services.engine, 1)
    seen = Checkouts(pg_services.engine)
    try:
        backend(kept)
        time.sleep(PING_AFTER_IDLE_SECONDS * 1.2)  # the idle time itself is what is tested
        backend(kept)
    finally:
        seen.stop()
        kept.close_mine()
    assert seen.count == 2  # checked out again, through the pool's checkout ping


@pytest.mark.postgres
def test_a_connection_that_failed_is_never_used_again(pg_services: Services) -> None:
    kept = KeptConnections(pg_services.engine, 1)
    try:
        first = backend(kept)
        with autocommit(pg_services.engine) as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({first})")
        with pytest.raises(DBAPIError):
            backend(kept)
        assert kept.kept == 0
        second = backend(kept)
    finally:
        kept.close_mine()
    assert second != first


@pytest.mark.postgres
def test_no_more_than_most_threads_keep_one_and_an_ended_thread_gives_way(
    pg_services: Services,
) -> None:
    kept = KeptConnections(pg_services.engine, 1)
    counts: list[int] = []

    def use() -> None:
        backend(kept)
        counts.append(kept.kept)

    holder = threading.Thread(target=use)
    holder.start()
    holder.join()
    assert counts == [1]  # the ended thread's connection is still counted
    try:
        backend(kept)  # this thread takes the place the ended one left
        assert kept.kept == 1
        other = threading.Thread(target=use)
        other.start()
        other.join()
        # Beyond `most`: the other thread checked one out for its use alone.
        assert counts == [1, 1]
    finally:
        kept.close_mine()
    assert kept.kept == 0


@pytest.mark.postgres
def test_one_fewer_than_the_pool_on_postgresql(pg_services: Services) -> None:
    pool_size = pg_services.engine.pool.size()  # type: ignore[attr-defined]
    assert KeptConnections.for_engine(pg_services.engine).most == pool_size - 1


def test_none_are_kept_on_sqlite(services: Services) -> None:
    assert KeptConnections.for_engine(services.engine).most == 0


@pytest.mark.postgres
def test_disposing_of_the_engine_closes_what_every_thread_kept(pg_settings: Settings) -> None:
    services = Services.build(pg_settings)
    kept = KeptConnections(services.engine, 2)
    elsewhere = threading.Thread(target=backend, args=(kept,))
    elsewhere.start()
    elsewhere.join()
    backend(kept)
    assert kept.kept == 2
    services.close()
    assert kept.kept == 0
