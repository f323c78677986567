"""Tampering with the audit trail is found, and the first bad event is named.

Each test builds a chain of 30 events, then changes the database the way an
attacker with SQL access would (the append-only triggers switched off for the
tampering transaction), then checks verify_chain and `mfa-codes audit verify`.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import Connection, delete, select, text, update

from cli.main import cli
from domain import accounts, audit
from domain import audit_types as types
from domain.audit_checkpoint import checkpoint_org
from domain.audit_verify import Verification, verify_chain
from domain.models import AuditCheckpoint, AuditEvent, AuditHead
from domain.services import Services
from tests.conftest import unique

N = 30
EVENTS = AuditEvent.__table__
SQLITE_TRIGGERS = importlib.import_module("migrations.versions.0002_audit_append_only").SQLITE_UP


@pytest.fixture(params=["sqlite", "postgres"])
def svc(request: pytest.FixtureRequest) -> Services:
    name = "services" if request.param == "sqlite" else "pg_services"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def build_chain(services: Services, checkpoints_at: tuple[int, ...] = ()) -> str:
    """An organization whose chain holds N events, signed at the given seqs."""
    org = unique("tamper")
    start = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    with services.unit_of_work() as session:
        accounts.create_org(session, org, audit.CLI)
    for seq in range(2, N + 1):
        with services.unit_of_work() as session:
            ctx = audit.Context(
                principal_id=f"user-{seq % 4}",
                role="user",
                token_id=f"tok-{seq % 3}",
                request_id=f"req-{seq}",
                source_ip="127.0.0.1",
                user_agent="pytest",
            )
            audit.append(
                session,
                org,
                types.REGENERATION_REQUESTED if seq % 2 else types.CODE_REJECTED,
                types.SUCCESS if seq % 2 else types.FAILURE,
                ctx,
                user_id=f"user-{seq % 4}",
                details={"n": seq, "remaining": seq % 5},
                at=start + timedelta(seconds=seq),
            )
            if seq in checkpoints_at:
                checkpoint_org(session, services.settings, org, start + timedelta(seconds=seq))
    return org


def tamper(services: Services, change: Callable[[Connection], None]) -> None:
    """Run `change` in one transaction with the append-only triggers switched off."""
    with services.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            change(conn)
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))
            change(conn)
            for statement in SQLITE_TRIGGERS:
                conn.execute(text(statement))


def rows(conn: Connection, org: str, from_seq: int = 1) -> list[Any]:
    query = select(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq >= from_seq)
    return list(conn.execute(query.order_by(EVENTS.c.seq)).all())


def as_event(row: Any, **changes: Any) -> AuditEvent:
    fields = {c.name: getattr(row, c.name) for c in EVENTS.columns}
    fields.update(changes)
    return AuditEvent(**fields)


def set_head(conn: Connection, org: str, seq: int) -> None:
    """What a careful attacker does after cutting or rewriting: make the head agree."""
    last = rows(conn, org, seq)[0]
    conn.execute(
        update(AuditHead).where(AuditHead.org_id == org).values(seq=last.seq, hash=last.hash)
    )


def verify(services: Services, org: str) -> Verification:
    with services.unit_of_work() as session:
        return verify_chain(session, org, services.settings)


def cli_verify(services: Services, org: str) -> tuple[int, str]:
    settings = services.settings
    env = {
        "MFA_VAR_DIR": str(settings.var_dir),
        "MFA_DATABASE_URL": settings.database_url,
        "MFA_BROKER_URL": settings.broker_url,
        "MFA_SECRET_KEY": ",".join(settings.secret_keys),
        "MFA_AUDIT_SIGNING_KEY": base64.b64encode(settings.audit_signing_key).decode(),
    }
    result = CliRunner().invoke(cli, ["audit", "verify", "--org", org], env=env)
    return result.exit_code, result.output


def assert_found(services: Services, org: str, first_bad: int, words: str) -> Verification:
    result = verify(services, org)
    assert not result.ok
    assert result.first_bad_seq == first_bad, result.reason
    assert result.reason is not None and words in result.reason
    code, output = cli_verify(services, org)
    assert code == 1, output
    assert f"{org}: BROKEN at seq {first_bad}" in output
    return result


# -- an intact chain -----------------------------------------------------------------


def test_an_intact_chain_verifies_with_its_checkpoint(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    result = verify(svc, org)
    assert result.ok and result.first_bad_seq is None and result.reason is None
    assert result.events_checked == N
    with svc.unit_of_work() as session:
        head = session.get(AuditHead, org)
        assert head is not None
        assert result.head == {"seq": N, "hash": head.hash}
    assert result.checkpoint is not None
    assert result.checkpoint["seq"] == N and result.checkpoint["verified"] is True
    code, output = cli_verify(svc, org)
    assert code == 0 and f"{org}: ok ({N} events" in output


def test_batches_smaller_than_the_chain_give_the_same_verdicts(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(7, 20))
    with svc.unit_of_work() as session:
        small = verify_chain(session, org, svc.settings, batch=4)
    assert small.ok and small.events_checked == N and small.checkpoint is not None
    tamper(
        svc, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq == 13))
    )
    with svc.unit_of_work() as session:
        broken = verify_chain(session, org, svc.settings, batch=4)
    assert broken.first_bad_seq == 13


# -- one event touched ---------------------------------------------------------------


def test_an_edited_field_is_named(svc: Services) -> None:
    org = build_chain(svc)
    tamper(
        svc,
        lambda c: c.execute(
            update(EVENTS)
            .where(EVENTS.c.org_id == org, EVENTS.c.seq == 12)
            .values(outcome="success", details={"n": 12, "remaining": 4})
        ),
    )
    assert_found(svc, org, 12, "edited")


def test_a_deleted_event_is_named(svc: Services) -> None:
    org = build_chain(svc)
    tamper(
        svc, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq == 12))
    )
    assert_found(svc, org, 12, "missing")


def test_a_deleted_event_with_the_rest_renumbered_is_named(svc: Services) -> None:
    org = build_chain(svc)

    def change(conn: Connection) -> None:
        conn.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq == 12))
        shift(conn, org, 13, -1)
        set_head(conn, org, N - 1)

    tamper(svc, change)
    assert_found(svc, org, 12, "link")


def shift(conn: Connection, org: str, from_seq: int, by: int) -> None:
    """Renumber seq >= from_seq by `by`, in two steps so (org, seq) stays unique."""
    big = 1_000_000
    sel = (EVENTS.c.org_id == org) & (EVENTS.c.seq >= from_seq)
    conn.execute(update(EVENTS).where(sel).values(seq=EVENTS.c.seq + big))
    conn.execute(
        update(EVENTS)
        .where(EVENTS.c.org_id == org, EVENTS.c.seq >= big)
        .values(seq=EVENTS.c.seq - big + by)
    )


def test_an_inserted_event_with_a_valid_hash_is_named(svc: Services) -> None:
    org = build_chain(svc)

    def change(conn: Connection) -> None:
        before = rows(conn, org, 11)[0]
        shift(conn, org, 12, +1)
        forged = as_event(
            before,
            id="00000000-0000-4000-8000-00000000f0f0",
            seq=12,
            type=types.CODES_REVOKED,
            details={"forged": True},
            prev_hash=before.hash,
        )
        forged.hash = audit.chain_hash(forged, before.hash)
        values = {c.name: getattr(forged, c.name) for c in EVENTS.columns}
        conn.execute(EVENTS.insert().values(**values))
        set_head(conn, org, N + 1)

    tamper(svc, change)
    assert_found(svc, org, 12, "inserted")


def test_two_swapped_events_are_named(svc: Services) -> None:
    org = build_chain(svc)

    def change(conn: Connection) -> None:
        a, b = rows(conn, org, 12)[:2]
        conn.execute(update(EVENTS).where(EVENTS.c.id == a.id).values(seq=-1))
        conn.execute(update(EVENTS).where(EVENTS.c.id == b.id).values(seq=12))
        conn.execute(update(EVENTS).where(EVENTS.c.id == a.id).values(seq=13))

    tamper(svc, change)
    assert_found(svc, org, 12, "link")


def test_an_event_planted_after_the_head_is_named(svc: Services) -> None:
    org = build_chain(svc)

    def change(conn: Connection) -> None:
        last = rows(conn, org, N)[0]
        forged = as_event(
            last, id="00000000-0000-4000-8000-00000000f0f1", seq=N + 1, prev_hash=last.hash
        )
        forged.hash = audit.chain_hash(forged, last.hash)
        conn.execute(
            EVENTS.insert().values(**{c.name: getattr(forged, c.name) for c in EVENTS.columns})
        )

    tamper(svc, change)
    assert_found(svc, org, N + 1, "after the head")


# -- the chain cut or rewritten ------------------------------------------------------


def test_a_cut_tail_with_the_head_reset_is_found_by_the_checkpoint(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))

    def change(conn: Connection) -> None:
        conn.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq > 25))
        set_head(conn, org, 25)

    tamper(svc, change)
    result = assert_found(svc, org, 26, "truncated")
    assert result.checkpoint is not None and result.checkpoint["seq"] == N


def test_a_cut_tail_without_a_checkpoint_is_found_by_the_head(svc: Services) -> None:
    org = build_chain(svc)
    tamper(
        svc, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq > 25))
    )
    assert_found(svc, org, 26, "head is at seq 30")


def rewrite_from(conn: Connection, org: str, seq: int) -> None:
    """Edit event `seq` and recompute every hash after it, head included."""
    prev = rows(conn, org, seq - 1)[0].hash
    for row in rows(conn, org, seq):
        details = {"n": row.seq, "remaining": 99} if row.seq == seq else row.details
        event = as_event(row, details=details, prev_hash=prev)
        event.hash = audit.chain_hash(event, prev)
        conn.execute(
            update(EVENTS)
            .where(EVENTS.c.id == row.id)
            .values(details=details, prev_hash=prev, hash=event.hash)
        )
        prev = event.hash
    set_head(conn, org, N)


def test_a_rewritten_chain_is_named_at_the_first_checkpoint_it_no_longer_matches(
    svc: Services,
) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    tamper(svc, lambda c: rewrite_from(c, org, 15))
    result = assert_found(svc, org, 20, "checkpoint signed at seq 20")
    assert result.checkpoint is not None and result.checkpoint["verified"] is True


def test_a_rewritten_chain_without_checkpoints_goes_unnoticed(svc: Services) -> None:
    """The reason checkpoints exist: without one, a full rewrite is consistent."""
    org = build_chain(svc)
    before = verify(svc, org).head
    tamper(svc, lambda c: rewrite_from(c, org, 15))
    after = verify(svc, org)
    assert after.ok
    assert before is not None and after.head is not None
    assert after.head["hash"] != before["hash"]  # it was rewritten, and nothing shows


def test_checkpoints_re_signed_with_another_key_are_refused(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    tamper(svc, lambda c: rewrite_from(c, org, 15))
    other = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    forger = replace(svc.settings, audit_signing_key=other)
    with svc.unit_of_work() as session:
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.org_id == org))
        checkpoint_org(session, forger, org, datetime.now(UTC))
    assert_found(svc, org, N, "signed by an unknown key")


def test_a_checkpoint_whose_fields_were_edited_is_refused(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    with svc.unit_of_work() as session:
        session.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.org_id == org, AuditCheckpoint.seq == 20)
            .values(seq=21)
        )
    assert_found(svc, org, 21, "no valid signature")


def test_verify_over_every_organization_fails_if_one_fails(
    services: Services, tmp_path: Any
) -> None:
    good = build_chain(services)
    bad = build_chain(services)
    tamper(
        services,
        lambda c: c.execute(delete(EVENTS).where(EVENTS.c.org_id == bad, EVENTS.c.seq == 3)),
    )
    settings = services.settings
    env = {
        "MFA_VAR_DIR": str(settings.var_dir),
        "MFA_DATABASE_URL": settings.database_url,
        "MFA_SECRET_KEY": ",".join(settings.secret_keys),
    }
    result = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert result.exit_code == 1
    assert f"{good}: ok" in result.output
    assert f"{bad}: BROKEN at seq 3" in result.output
    with services.unit_of_work() as session:
        recorded = session.execute(
            select(AuditEvent.outcome, AuditEvent.details).where(
                AuditEvent.org_id == good, AuditEvent.type == types.AUDIT_VERIFIED
            )
        ).one()
    assert recorded.outcome == types.SUCCESS
    assert recorded.details["ok"] is True and recorded.details["events_checked"] == N
