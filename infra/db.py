"""Engine, session factory and the unit of work (commit or roll back)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from domain.clock import utcnow as utcnow  # re-exported for callers of infra.db
from domain.uow import AfterCommit, UnitOfWork

SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_SECONDS = 0.5


def make_engine(url: str, **kwargs: Any) -> Engine:
    # An error's text then never carries a statement's parameters into a log.
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    # The connection checked in last is handed out first, so a request's second
    # checkout (its unit of work, after the token lookup) finds the one it just used.
    kwargs.setdefault("pool_use_lifo", True)
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """The pool's pessimistic disconnect check, skipped for a connection used within
    the last PING_AFTER_IDLE_SECONDS (as HikariCP's aliveBypassWindowMs does): a ping
    on every checkout is a round trip per checkout, and a connection that just
    answered is as good as pinged. One that died meanwhile fails its first statement,
    which answers 503 like a failed ping (api.errors) and has SQLAlchemy invalidate
    the pool's connections, so the next checkout pings or reconnects."""

    @event.listens_for(engine, "checkin")
    def _used(_dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is not None and time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_conn, None):
                # The pool discards the connection and checks out another (or connects).
                raise DisconnectionError(str(exc)) from exc
            raise


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        from pathlib import Path

        Path(database).parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("connect_args", {})
    kwargs["connect_args"].setdefault("timeout", 30)
    # pysqlite's own transaction handling is disabled so that every unit of work
    # can start with BEGIN IMMEDIATE: a read-then-write transaction then never
    # fails half-way with "database is locked"; writers queue instead.
    kwargs["connect_args"]["isolation_level"] = None
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # A lone read in autocommit (a token lookup, the readiness check) needs no
        # transaction, and must not queue behind the writers for the write lock.
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def not_waiting_for_locks(conn: Connection) -> Iterator[None]:
    """Statements in the block fail at once rather than queue for SQLite's write lock
    (a busy_timeout of 0, then back to the usual); on PostgreSQL the statement itself
    says what it will not wait for (FOR UPDATE SKIP LOCKED)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


@contextmanager
def unit_of_work(
    factory: sessionmaker[Session], hooks: Sequence[AfterCommit] = ()
) -> Iterator[UnitOfWork]:
    """One transaction: commits when the block ends, rolls back when it raises.
    `hooks` run after the commit with what it produced (domain.uow)."""
    uow = UnitOfWork(factory(), hooks)
    try:
        yield uow
        uow.commit()
    except BaseException:
        uow.rollback()
        raise
    finally:
        uow.session.close()
