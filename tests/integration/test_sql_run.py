"""domain.sql.run, the hot paths' statements compiled once: on PostgreSQL they run on
the driver's cursor, on SQLite through the Core. What a caller sees must not depend on
which: the same rows, the same wrapped errors, the same cursor events, and a lost
connection invalidated so that the pool replaces it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, event, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from domain import audit, sql
from domain.models import AuditEvent, DeliveryStatus, User
from infra.services import Services
from tests.support.builders import NOW, holder

_EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
_USERS: Table = User.__table__  # type: ignore[assignment]

_EVENT_BY_SEQ = select(*_EVENTS.columns).where(
    _EVENTS.c.org_id == bindparam("org"), _EVENTS.c.seq == bindparam("seq")
)
_RENAME = update(_USERS).where(_USERS.c.id == bindparam("for_id"))
_ADD_USER = insert(_USERS)  # users.id and created_at have Python-side defaults
_USER_NAMED = select(_USERS.c.id, _USERS.c.created_at).where(
    _USERS.c.org_id == bindparam("org"), _USERS.c.external_id == bindparam("ext")
)
_ONE = select(text("1"))


def test_rows_are_what_the_core_reads_json_and_datetimes_included(svc: Services) -> None:
    h = holder(svc)
    with svc.unit_of_work() as uow:
        audit.append(
            uow, h.org_id, "backup_codes.code.rejected", "failure", audit.CLI,
            user_id=h.external_id, details={"remaining": 5, "nested": {"a": [1, "x"]}}, at=NOW,
        )  # fmt: skip
    with svc.engine.connect() as conn:
        last = select(func.max(_EVENTS.c.seq)).where(_EVENTS.c.org_id == h.org_id)
        seq = conn.execute(last).scalar_one()
        params = {"org": h.org_id, "seq": seq}
        ours = sql.run(conn, _EVENT_BY_SEQ, params).one()
        core = tuple(conn.execute(_EVENT_BY_SEQ, params).one())
    assert dict(zip(_EVENTS.columns.keys(), ours, strict=True)) == dict(
        zip(_EVENTS.columns.keys(), core, strict=True)
    )
    occurred_at = ours[list(_EVENTS.columns.keys()).index("occurred_at")]
    assert occurred_at == NOW and occurred_at.utcoffset() is not None


def test_rowcount_enums_and_python_side_defaults(svc: Services) -> None:
    h = holder(svc)
    user_id = h.user_id
    with svc.engine.begin() as conn:
        # An enum is sent as its value (here into a text column).
        renamed = sql.run(conn, _RENAME, {"for_id": user_id, "display_name": DeliveryStatus.DEAD})
        missing = sql.run(conn, _RENAME, {"for_id": "no-such-user", "display_name": "x"})
        assert (renamed.rowcount, missing.rowcount, renamed.rows) == (1, 0, [])
        assert conn.execute(select(_USERS.c.display_name).where(_USERS.c.id == user_id)).one()[
            0
        ] == str(DeliveryStatus.DEAD)
        # No id and no created_at given: their Python defaults need the Core, which
        # run falls back to; the row is there with both.
        sql.run(conn, _ADD_USER, {"org_id": h.org_id, "external_id": "bob"})
        added = sql.run(conn, _USER_NAMED, {"org": h.org_id, "ext": "bob"}).one()
    assert uuid.UUID(added[0]) and added[1] is not None


def test_a_driver_error_is_wrapped_as_the_core_wraps_it(svc: Services) -> None:
    h = holder(svc)
    with svc.engine.begin() as conn:
        sql.run(conn, _ADD_USER, {"org_id": h.org_id, "external_id": "bob"})
    with svc.engine.connect() as conn:
        with pytest.raises(IntegrityError), conn.begin():
            # alice renamed bob in the same organization: the unique (org, external id)
            sql.run(conn, _RENAME, {"for_id": h.user_id, "external_id": "bob"})
        # rolled back with the block: the connection serves the next statement
        assert sql.run(conn, _ONE, {}).one() == (1,)


def test_the_engines_cursor_events_see_each_statement(svc: Services) -> None:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(svc.engine, "before_cursor_execute", note)
    try:
        with svc.engine.connect() as conn:
            sql.run(conn, _ONE, {})
    finally:
        event.remove(svc.engine, "before_cursor_execute", note)
    assert [s.strip().upper() for s in seen if "BEGIN" not in s.upper()] == ["SELECT 1"]


@pytest.mark.postgres
def test_a_lost_connection_is_an_operational_error_and_is_invalidated(
    pg_services: Services,
) -> None:
    engine = pg_services.engine
    with engine.connect() as conn:
        sql.run(conn, _ONE, {})  # compiled, and the connection in use
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        conn.commit()
        with engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            other.commit()
        with pytest.raises(OperationalError) as raised:
            sql.run(conn, _ONE, {})
        assert raised.value.connection_invalidated and conn.invalidated
    with engine.connect() as fresh:  # the pool connects anew
        assert sql.run(fresh, _ONE, {}).one() == (1,)
