"""Chains written before server_request_id existed still verify after the upgrade,
and go on growing with events that carry it (issue 10, point 7(g)).

The old events are written at schema 0002 with the hash of the canonical form as
it was then (copied here, frozen), so the test fails if today's canonical form
changes the bytes of an event without a server_request_id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.audit.verify import verify_chain
from infra.migrate import alembic_config, upgrade
from infra.services import Services
from tests.support.postgres import fresh_postgres_database, owner_url
from tests.support.settings import make_settings

GENESIS = "0" * 64
# The columns audit_events had at 0002, and no others.
INSERT_OLD_EVENT = text(
    "INSERT INTO audit_events (id, org_id, seq, occurred_at, type, outcome, "
    "actor_principal_id, actor_role, actor_token_id, user_id, request_id, source_ip, "
    "user_agent, details, prev_hash, hash) VALUES (:id, :org_id, :seq, :occurred_at, "
    ":type, :outcome, :actor_principal_id, :actor_role, :actor_token_id, :user_id, "
    ":request_id, :source_ip, :user_agent, :details, :prev_hash, :hash)"
)


def old_canonical(event: dict[str, Any]) -> bytes:
    """domain.audit.canonical as of schema 0002 (before server_request_id)."""
    body = {
        "org_id": event["org_id"],
        "seq": event["seq"],
        "id": event["id"],
        "occurred_at": event["occurred_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "type": event["type"],
        "outcome": event["outcome"],
        "actor": {
            "principal_id": event["actor_principal_id"],
            "role": event["actor_role"],
            "token_id": event["actor_token_id"],
        },
        "user_id": event["user_id"],
        "request_id": event["request_id"],
        "source_ip": event["source_ip"],
        "user_agent": event["user_agent"],
        "details": event["details"],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The service's URL (on PostgreSQL a role that owns nothing)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        upgrade(url)
        yield url
        return
    with fresh_postgres_database("mfa_oldchain") as url:
        yield url


def _owner(url: str) -> str:
    """Migrations (and the rows of an old schema) need the owner on PostgreSQL."""
    return url if url.startswith("sqlite") else owner_url(url)


def test_an_old_chain_verifies_after_the_upgrade_and_grows_with_server_ids(
    database_url: str, tmp_path: Path
) -> None:
    # Back to the schema before this change (its downgrade runs too), then old events.
    command.downgrade(alembic_config(_owner(database_url)), "0002")
    engine = create_engine(_owner(database_url))
    prev = GENESIS
    old_events = 3
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO organizations (id, backup_codes_enabled, "
                              "code_count, created_at) VALUES ('acme', true, 5, :now)"),
                         {"now": datetime.now(UTC).replace(tzinfo=None)})  # fmt: skip
            for seq in range(1, old_events + 1):
                event = {
                    "id": f"00000000-0000-4000-8000-00000000000{seq}",
                    "org_id": "acme",
                    "seq": seq,
                    "occurred_at": datetime.now(UTC),
                    "type": EventType.TOKEN_ISSUED,
                    "outcome": Outcome.SUCCESS,
                    "actor_principal_id": "cli",
                    "actor_role": "operator",
                    "actor_token_id": None,
                    "user_id": None,
                    "request_id": f"old-{seq}",
                    "source_ip": "127.0.0.1",
                    "user_agent": "Mozilla/5.0 (café; 日本)",
                    "details": {"role": "service", "principal_id": f"svc{seq}"},
                }
                digest = hashlib.sha256(old_canonical(event) + prev.encode()).hexdigest()
                row = {
                    **event,
                    "occurred_at": event["occurred_at"].replace(tzinfo=None),
                    "details": json.dumps(event["details"]),
                    "prev_hash": prev,
                    "hash": digest,
                }
                conn.execute(INSERT_OLD_EVENT, row)
                prev = digest
            conn.execute(
                text("INSERT INTO audit_heads (org_id, seq, hash) VALUES ('acme', :seq, :hash)"),
                {"seq": old_events, "hash": prev},
            )
    finally:
        engine.dispose()

    upgrade(_owner(database_url), app_url=database_url)
    settings = make_settings(tmp_path, MFA_DATABASE_URL=database_url)
    services = Services.build(settings)
    try:
        ctx = audit.Context(principal_id="cli", role="operator", server_request_id="srv-new-1")
        with services.unit_of_work() as uow:
            appended = audit.append(uow, "acme", EventType.TOKEN_ISSUED, Outcome.SUCCESS, ctx)
            assert appended.seq == old_events + 1
            assert appended.prev_hash == prev
            assert b'"server_request_id":"srv-new-1"' in audit.canonical(appended)
        with services.unit_of_work() as uow:
            result = verify_chain(uow.session, "acme", settings)
        assert (result.ok, result.first_bad_seq, result.events_checked) == (
            True,
            None,
            old_events + 1,
        ), result.reason
    finally:
        services.close()
