"""The audit tables refuse to change what they hold (migrations 0002 and 0003), on both
databases; on PostgreSQL the service's role (the scratch database's application
role, owner of nothing) may not even try, nor switch a trigger off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, select, text
from sqlalchemy.exc import DBAPIError

from domain import accounts, audit
from domain.audit.checkpoints import checkpoint_org
from domain.models import AuditCheckpoint, AuditEvent, AuditHead
from infra.migrate import upgrade
from infra.services import Services
from tests.support.builders import unique
from tests.support.postgres import owner_url


def _org_with_events(services: Services) -> str:
    org = unique("trig")
    with services.unit_of_work() as uow:
        accounts.create_org(uow, org, audit.CLI)
        accounts.create_user(uow, org, "alice", None, audit.CLI)
    return org


def _events(services: Services, org: str) -> list[tuple[int, str, str]]:
    with services.unit_of_work() as uow:
        query = select(AuditEvent.seq, AuditEvent.outcome, AuditEvent.hash)
        return [tuple(r) for r in uow.session.execute(query.where(AuditEvent.org_id == org))]


STATEMENTS = {
    "update": "UPDATE audit_events SET outcome = 'failure' WHERE org_id = :org",
    "delete": "DELETE FROM audit_events WHERE org_id = :org",
}


@pytest.mark.parametrize("kind", sorted(STATEMENTS))
def test_sqlite_refuses(services: Services, kind: str) -> None:
    org = _org_with_events(services)
    before = _events(services, org)
    with pytest.raises(DBAPIError, match="append-only"), services.unit_of_work() as uow:
        uow.session.execute(text(STATEMENTS[kind]), {"org": org})
    assert _events(services, org) == before and len(before) == 2


@pytest.mark.parametrize("kind", sorted(STATEMENTS))
def test_postgres_refuses(pg_services: Services, kind: str) -> None:
    """The service's role has no UPDATE or DELETE privilege; the owner hits the trigger."""
    org = _org_with_events(pg_services)
    before = _events(pg_services, org)
    refused = pytest.raises(DBAPIError, match="permission denied for table audit_events")
    with refused, pg_services.unit_of_work() as uow:
        uow.session.execute(text(STATEMENTS[kind]), {"org": org})
    with pytest.raises(DBAPIError, match="append-only"), _owner(pg_services) as conn:
        conn.execute(text(STATEMENTS[kind]), {"org": org})
    assert _events(pg_services, org) == before and len(before) == 2


@contextmanager
def _owner(services: Services) -> Iterator[Connection]:
    engine = create_engine(owner_url(services.settings.database_url))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _signed_org(services: Services) -> str:
    org = _org_with_events(services)
    with services.unit_of_work() as uow:
        assert checkpoint_org(uow, services.settings, org, datetime.now(UTC)) is not None
    return org


def _state(services: Services, org: str) -> tuple[object, ...]:
    with services.unit_of_work() as uow:
        head = uow.session.get(AuditHead, org)
        assert head is not None
        checkpoints = uow.session.execute(
            select(AuditCheckpoint.seq, AuditCheckpoint.hash).where(AuditCheckpoint.org_id == org)
        ).all()
        state = (head.seq, head.hash, head.checkpoints, tuple(checkpoints))
    return (*state, _events(services, org))


# What an attacker with the service's credentials would try, and what refuses it.
APP_ROLE_REFUSED = {
    "disable the events trigger": "ALTER TABLE audit_events DISABLE TRIGGER USER",
    "disable the checkpoints trigger": "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
    "disable the heads trigger": "ALTER TABLE audit_heads DISABLE TRIGGER ALL",
    "drop the events trigger": "DROP TRIGGER audit_events_no_update_delete ON audit_events",
    "delete an event": "DELETE FROM audit_events WHERE org_id = :org AND seq = 2",
    "update an event": "UPDATE audit_events SET outcome = 'success' WHERE org_id = :org",
    "delete a checkpoint": "DELETE FROM audit_checkpoints WHERE org_id = :org",
    "update a checkpoint": "UPDATE audit_checkpoints SET seq = 1 WHERE org_id = :org",
    "truncate the events": "TRUNCATE audit_events",
    "truncate the checkpoints": "TRUNCATE audit_checkpoints",
    "truncate the heads": "TRUNCATE audit_heads",
    "delete a head": "DELETE FROM audit_heads WHERE org_id = :org",
    "move a head back": "UPDATE audit_heads SET seq = 1 WHERE org_id = :org",
    "rewrite a head in place": "UPDATE audit_heads SET hash = repeat('0', 64) WHERE org_id = :org",
    "lower the checkpoint count": "UPDATE audit_heads SET checkpoints = 0 WHERE org_id = :org",
}


@pytest.mark.parametrize("attempt", sorted(APP_ROLE_REFUSED))
def test_the_service_role_cannot_erase_the_evidence(pg_services: Services, attempt: str) -> None:
    org = _signed_org(pg_services)
    before = _state(pg_services, org)
    refused = pytest.raises(DBAPIError, match=r"must be owner|permission denied|only move forward")
    with refused, pg_services.unit_of_work() as uow:
        uow.session.execute(text(APP_ROLE_REFUSED[attempt]), {"org": org})
    assert _state(pg_services, org) == before


def test_the_service_role_owns_nothing_and_moves_heads_forward(pg_services: Services) -> None:
    with pg_services.unit_of_work() as uow:
        owned = uow.session.execute(
            text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user"
            )
        ).scalar_one()
    assert owned == 0
    org = _signed_org(pg_services)
    with pg_services.unit_of_work() as uow:
        audit.append(uow, org, "audit.read", "success", audit.CLI)
    assert _state(pg_services, org)[0] == 3


OWNER_REFUSED = {
    "delete an event": "DELETE FROM audit_events WHERE org_id = :org",
    "update a checkpoint": "UPDATE audit_checkpoints SET seq = 1 WHERE org_id = :org",
    "delete a checkpoint": "DELETE FROM audit_checkpoints WHERE org_id = :org",
    "move a head back": "UPDATE audit_heads SET seq = 0 WHERE org_id = :org",
    "truncate the checkpoints": "TRUNCATE audit_checkpoints",
}


@pytest.mark.parametrize("attempt", sorted(OWNER_REFUSED))
def test_the_owner_is_refused_by_the_triggers_too(pg_services: Services, attempt: str) -> None:
    """The triggers stay as the second wall: even the owner must switch them off."""
    org = _signed_org(pg_services)
    before = _state(pg_services, org)
    refused = pytest.raises(DBAPIError, match=r"append-only|only move forward")
    with refused, _owner(pg_services) as conn:
        conn.execute(text(OWNER_REFUSED[attempt]), {"org": org})
    assert _state(pg_services, org) == before


SQLITE_REFUSED = {
    "delete a checkpoint": "DELETE FROM audit_checkpoints WHERE org_id = :org",
    "update a checkpoint": "UPDATE audit_checkpoints SET seq = 1 WHERE org_id = :org",
    "delete a head": "DELETE FROM audit_heads WHERE org_id = :org",
    "move a head back": "UPDATE audit_heads SET seq = 1 WHERE org_id = :org",
    "rewrite a head in place": "UPDATE audit_heads SET hash = '00' WHERE org_id = :org",
    "lower the checkpoint count": "UPDATE audit_heads SET checkpoints = 0 WHERE org_id = :org",
}


@pytest.mark.parametrize("attempt", sorted(SQLITE_REFUSED))
def test_sqlite_refuses_changing_checkpoints_and_heads(services: Services, attempt: str) -> None:
    org = _signed_org(services)
    before = _state(services, org)
    refused = pytest.raises(DBAPIError, match=r"append-only|only move forward")
    with refused, services.unit_of_work() as uow:
        uow.session.execute(text(SQLITE_REFUSED[attempt]), {"org": org})
    assert _state(services, org) == before


def test_appending_still_works_after_a_refusal(services: Services) -> None:
    org = _org_with_events(services)
    with pytest.raises(DBAPIError), services.unit_of_work() as uow:
        uow.session.execute(text(STATEMENTS["delete"]), {"org": org})
    with services.unit_of_work() as uow:
        audit.append(uow, org, "audit.read", "success", audit.CLI)
    assert [seq for seq, _, _ in _events(services, org)] == [1, 2, 3]


def test_migration_0003_counts_the_checkpoints_a_chain_already_has(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO audit_heads (org_id, seq, hash) VALUES ('a', 2, 'h')"))
            for seq in (1, 2):
                conn.execute(
                    text(
                        "INSERT INTO audit_checkpoints (org_id, seq, hash, signed_at, key_id, "
                        "signature) VALUES ('a', :seq, 'h', '2026-01-01 00:00:00', 'k', 's')"
                    ),
                    {"seq": seq},
                )
        upgrade(url)
        with engine.connect() as conn:
            count = conn.execute(text("SELECT checkpoints FROM audit_heads")).scalar_one()
    finally:
        engine.dispose()
    assert count == 2
