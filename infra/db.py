"""Engine, session factory and the unit of work (commit or roll back)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from domain.clock import utcnow as utcnow  # re-exported for callers of infra.db
from domain.uow import AfterCommit, UnitOfWork

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    # An error's text then never carries a statement's parameters into a log.
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


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
