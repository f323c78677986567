"""Engine, session factory and the unit of work (commit or roll back)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection of the pool whose every statement commits on its own."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


@dataclass
class _Held:
    """A thread's kept connection and when the thread last gave it back."""

    conn: Connection
    used_at: float


class KeptConnections:
    """Autocommit connections kept by the threads that use them, between uses.

    For workers whose threads run one short statement after another (the webhook
    delivery's claim and record): a checkout and a checkin of the pool, with the
    isolation level set and reset, cost more CPU than such a statement. A thread
    keeps its connection while it keeps using it; one unused for
    PING_AFTER_IDLE_SECONDS goes back to the pool before the next use, whose
    checkout ping then vouches for the connection it gets (the rule the pool itself
    follows), so an idle worker holds nothing for long. At most `most` threads keep
    one at a time (a thread that ended gives its place up), the others check one
    out for each use, so that the process's other work always finds the rest of the
    pool. A connection that raised is discarded, never reused nor pooled. Nothing
    is kept across a fork (a child opens its own)."""

    def __init__(self, engine: Engine, most: int) -> None:
        self.engine = engine
        self.most = most
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # thread -> its connection and when it was last used
        self._kept: dict[threading.Thread, _Held] = {}
        self._connecting = 0  # threads checking out the connection they will keep
        if most > 0:
            # Disposing of the engine (the process's services closing) closes them
            # all: kept, they would outlive the pool they came from.
            event.listen(engine, "engine_disposed", lambda _engine: self.close_all())

    @classmethod
    def for_engine(cls, engine: Engine) -> KeptConnections:
        """One fewer than the pool's size on PostgreSQL; none on SQLite, whose file
        is opened in process and costs no round trip to check out."""
        size = getattr(engine.pool, "size", None)
        if engine.dialect.name != "postgresql" or size is None:
            return cls(engine, 0)
        return cls(engine, max(0, size() - 1))

    @property
    def kept(self) -> int:
        return len(self._kept)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        held = self._kept_connection()
        if held is None:  # beyond `most`: a checkout for this use alone
            with autocommit(self.engine) as own:
                try:
                    yield own
                except BaseException:
                    own.invalidate()  # as below
                    raise
            return
        try:
            yield held.conn
        except BaseException:
            # Its driver connection may be broken (a statement may have run on the
            # driver's own cursor, unseen by the pool's disconnect check): discarded.
            held.conn.invalidate()
            self.close_mine()
            raise
        # No lock: only this thread writes its record (one that close_all dropped
        # meanwhile, at shutdown, is written to and forgotten).
        held.used_at = time.monotonic()

    def _kept_connection(self) -> _Held | None:
        me = threading.current_thread()
        # Without the lock on the way that finds one (every use): only this thread
        # adds or replaces its own entry, and a dict's get is atomic.
        held = self._kept.get(me) if self._pid == os.getpid() else None
        if held is not None:
            if time.monotonic() - held.used_at < PING_AFTER_IDLE_SECONDS:
                return held
            self.close_mine()
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's are not ours
                self._pid, self._kept, self._connecting = os.getpid(), {}, 0
            if len(self._kept) + self._connecting >= self.most:
                self._give_up_ended()
                if len(self._kept) + self._connecting >= self.most:
                    return None
            self._connecting += 1  # the place is taken while the checkout runs
        # Outside the lock: a checkout may wait for the pool, and the other threads'
        # uses of what they keep must not wait with it.
        try:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        finally:
            with self._lock:
                self._connecting -= 1
        held = _Held(conn, time.monotonic())
        with self._lock:
            self._kept[me] = held
        return held

    def _give_up_ended(self) -> None:
        """Under the lock: close what threads that ended left behind."""
        for thread in [t for t in self._kept if not t.is_alive()]:
            self._kept.pop(thread).conn.close()

    def close_all(self) -> None:
        """Close every thread's kept connection (at shutdown: no thread is using one).
        Invalidated, so the driver's connection closes now: after a dispose the pool
        they would go back to is no longer the engine's, and nothing would close it."""
        with self._lock:
            held, self._kept = list(self._kept.values()), {}
        for one in held:
            one.conn.invalidate()
            one.conn.close()

    def close_mine(self) -> None:
        """Give this thread's kept connection back to the pool now."""
        with self._lock:
            held = self._kept.pop(threading.current_thread(), None)
        if held is not None:
            held.conn.close()


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
