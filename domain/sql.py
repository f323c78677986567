"""What a statement answers, where SQLAlchemy's types say less than the result holds;
and `run`, the hot paths' way to execute a statement built once.

`run` compiles a Core statement once per shape (the statement and the names of its
parameters) and, on PostgreSQL, executes its SQL on the driver's own cursor with
plain values: psycopg converts them, and rows come back as psycopg reads them (aware
datetimes, parsed JSON). The Core's per-execution work (the compiled cache's key,
bind and result processing, the execution context and the result object) cost more
Python than the statement's round trip on sign-in's path. What stays as with
`Connection.execute`: a driver error is wrapped the same way (an OperationalError is
a 503, a lost connection is invalidated), and the engine's cursor events fire. A
statement whose compiled form still needs the Core at execution (a Python-side
column default, an expanding IN) and every statement on SQLite go through
`Connection.execute` unchanged, so both backends see the same SQL and answers.

Only for statements built once (module constants, cached builders): the compiled
forms are kept per statement for the process's life. And no result processing: a
column whose type converts what the driver reads (a TypeDecorator's result side) is
read as the driver gives it; for UtcDateTime an aware datetime in the session's
zone (not always UTC's tzinfo: compare and subtract it, format it with domain.clock).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Executable, Result
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE changed (session.execute is typed as a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


@dataclass(frozen=True)
class Ran:
    """What `run` gave: the rows (tuples) and the rows the statement changed."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def one(self) -> tuple[Any, ...]:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]

    def one_or_none(self) -> tuple[Any, ...] | None:
        if len(self.rows) > 1:
            raise LookupError(f"expected at most one row, got {len(self.rows)}")
        return self.first()


@dataclass(frozen=True)
class _Prebuilt:
    statement: Executable  # held, so that its id is never another statement's
    sql: str | None  # None: this shape goes through Connection.execute
    literals: dict[str, Any]


_PREBUILT: dict[tuple[int, frozenset[str]], _Prebuilt] = {}
_COMPILING = threading.Lock()


def run(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> Ran:
    """Execute `statement` (built once: a module's constant or a cached builder's) with
    `params` on `conn`, in whatever transaction `conn` is in. A driver error reaches the
    caller wrapped as SQLAlchemy wraps it, on either backend."""
    if conn.dialect.name != "postgresql":
        return _through_core(conn, statement, params)
    key = (id(statement), frozenset(params))
    prebuilt = _PREBUILT.get(key)
    if prebuilt is None:
        prebuilt = _compile(conn, statement, key)
    if prebuilt.sql is None:
        return _through_core(conn, statement, params)
    driver = conn.connection.driver_connection
    assert driver is not None
    values = {**prebuilt.literals, **params}
    for name, value in params.items():
        if type(value) not in _AS_IS:
            values[name] = _plain_value(value)
    with driver.cursor() as cursor:
        # The engine's cursor events, as Connection.execute fires them (with no
        # execution context): tests count statements with them.
        dispatch = conn.dispatch
        before = dispatch.before_cursor_execute
        if before:
            before(conn, cursor, prebuilt.sql, values, None, False)
        try:
            cursor.execute(prebuilt.sql, values)
            # The result's column count, not `description`: that builds column objects.
            result = cursor.pgresult
            rows = cursor.fetchall() if result is not None and result.nfields else []
        except Exception as exc:
            # Wrapped as Connection.execute wraps it (an OperationalError is a 503),
            # and a lost connection invalidated so that the pool replaces it.
            conn._handle_dbapi_exception(exc, prebuilt.sql, values, cursor, None)
        after = dispatch.after_cursor_execute
        if after:
            after(conn, cursor, prebuilt.sql, values, None, False)
        return Ran(rows, cursor.rowcount)


def run_as_one(
    conn: Connection, combined: Executable, *parts: tuple[Executable, Mapping[str, Any]]
) -> None:
    """Writes that go as one statement on PostgreSQL, `combined` (built once: all but
    one of the parts as data-modifying WITHs of the other), with every part's
    parameters; elsewhere each part in turn (SQLite has no such WITH). The parts'
    parameter names must differ, and none may be a column's name in another part's
    table: compiled for the names given, it would join that table's SET or VALUES."""
    if conn.dialect.name != "postgresql":
        for statement, params in parts:
            run(conn, statement, params)
        return
    merged: dict[str, Any] = {}
    for _, params in parts:
        merged.update(params)
    run(conn, combined, merged)


def _compile(conn: Connection, statement: Executable, key: tuple[int, frozenset[str]]) -> _Prebuilt:
    with _COMPILING:  # one thread compiles a shape (SQLAlchemy's lazy memos are not shared-safe)
        known = _PREBUILT.get(key)
        if known is not None:
            return known
        clause = cast(ClauseElement, statement)  # every Executable here is one
        compiled = cast(
            SQLCompiler, clause.compile(dialect=conn.dialect, column_keys=sorted(key[1]))
        )
        sql: str | None = compiled.string
        needs_core = (
            bool(compiled.insert_prefetch or compiled.update_prefetch)
            or "POSTCOMPILE" in compiled.string
            or any(name not in key[1] and value is None for name, value in compiled.params.items())
        )
        if needs_core:
            sql = None
        literals = {k: v for k, v in _plain(compiled.params).items() if k not in key[1]}
        prebuilt = _PREBUILT[key] = _Prebuilt(statement, sql, literals)
        return prebuilt


def _through_core(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> Ran:
    result = conn.execute(statement, dict(params))
    rows: Sequence[Any] = result.all() if result.returns_rows else []
    return Ran([tuple(r) for r in rows], rowcount(result))


# Values psycopg takes as they are (exact types: a StrEnum member is converted).
_AS_IS = frozenset({str, int, float, bool, bytes, type(None), datetime, timedelta})


def _plain_value(value: Any) -> Any:
    """A value as the driver takes it: an enum's value, JSON as its text (psycopg
    adapts no dict; a text parameter into a JSON column is cast by the server)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain_value(v) for k, v in params.items()}
