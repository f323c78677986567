"""The audit table refuses to change what it holds (migration 0002), on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from domain import accounts, audit
from domain.models import AuditEvent
from domain.services import Services
from tests.conftest import unique


def _org_with_events(services: Services) -> str:
    org = unique("trig")
    with services.unit_of_work() as session:
        accounts.create_org(session, org, audit.CLI)
        accounts.create_user(session, org, "alice", None, audit.CLI)
    return org


def _events(services: Services, org: str) -> list[tuple[int, str, str]]:
    with services.unit_of_work() as session:
        query = select(AuditEvent.seq, AuditEvent.outcome, AuditEvent.hash)
        return [tuple(r) for r in session.execute(query.where(AuditEvent.org_id == org))]


STATEMENTS = {
    "update": "UPDATE audit_events SET outcome = 'failure' WHERE org_id = :org",
    "delete": "DELETE FROM audit_events WHERE org_id = :org",
}


@pytest.mark.parametrize("kind", sorted(STATEMENTS))
def test_sqlite_refuses(services: Services, kind: str) -> None:
    org = _org_with_events(services)
    before = _events(services, org)
    with pytest.raises(DBAPIError, match="append-only"), services.unit_of_work() as session:
        session.execute(text(STATEMENTS[kind]), {"org": org})
    assert _events(services, org) == before and len(before) == 2


@pytest.mark.parametrize("kind", sorted(STATEMENTS))
def test_postgres_refuses(pg_services: Services, kind: str) -> None:
    org = _org_with_events(pg_services)
    before = _events(pg_services, org)
    with pytest.raises(DBAPIError, match="append-only"), pg_services.unit_of_work() as session:
        session.execute(text(STATEMENTS[kind]), {"org": org})
    assert _events(pg_services, org) == before and len(before) == 2


def test_postgres_refuses_truncate(pg_services: Services) -> None:
    org = _org_with_events(pg_services)
    with pytest.raises(DBAPIError, match="TRUNCATE"), pg_services.unit_of_work() as session:
        session.execute(text("TRUNCATE audit_events"))
    assert len(_events(pg_services, org)) == 2


def test_appending_still_works_after_a_refusal(services: Services) -> None:
    org = _org_with_events(services)
    with pytest.raises(DBAPIError), services.unit_of_work() as session:
        session.execute(text(STATEMENTS["delete"]), {"org": org})
    with services.unit_of_work() as session:
        audit.append(session, org, "audit.read", "success", audit.CLI)
    assert [seq for seq, _, _ in _events(services, org)] == [1, 2, 3]
