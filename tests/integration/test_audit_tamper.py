"""Tampering with the audit trail is found, and the first bad event is named.

Each test builds a chain of 30 events, then changes the database the way an
attacker with SQL access would (the append-only triggers switched off for the
tampering transaction), then checks verify_chain and `mfa-codes audit verify`.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import Connection, create_engine, delete, select, text, update

from cli.main import cli
from domain import accounts, audit
from domain.audit.checkpoint_file import path_for as checkpoint_file_path
from domain.audit.checkpoints import checkpoint_org
from domain.audit.types import EventType, Outcome
from domain.audit.verify import Verification, verify_chain
from domain.models import AuditCheckpoint, AuditEvent, AuditHead
from infra.services import Services
from tests.support.builders import unique
from tests.support.postgres import owner_url

N = 30
EVENTS = AuditEvent.__table__
CHECKPOINTS = AuditCheckpoint.__table__
SQLITE_TRIGGERS = importlib.import_module("migrations.versions.0002_audit_append_only").SQLITE_UP
SQLITE_CHECKPOINT_TRIGGERS = importlib.import_module(
    "migrations.versions.0003_audit_tamper_evidence"
).SQLITE_UP
SQLITE_TRIGGER_NAMES = (
    "audit_events_no_update",
    "audit_events_no_delete",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
    "audit_heads_forward_only",
    "audit_heads_no_delete",
)


def build_chain(services: Services, checkpoints_at: tuple[int, ...] = ()) -> str:
    """An organization whose chain holds N events, signed at the given seqs."""
    org = unique("tamper")
    # Recent, as on a running service: the last events are not yet due for a checkpoint.
    start = datetime.now(UTC) - timedelta(seconds=N + 1)
    with services.unit_of_work() as uow:
        accounts.create_org(uow, org, audit.CLI)
    for seq in range(2, N + 1):
        with services.unit_of_work() as uow:
            ctx = audit.Context(
                principal_id=f"user-{seq % 4}",
                role="user",
                token_id=f"tok-{seq % 3}",
                request_id=f"req-{seq}",
                source_ip="127.0.0.1",
                user_agent="pytest",
            )
            audit.append(
                uow,
                org,
                EventType.REGENERATION_REQUESTED if seq % 2 else EventType.CODE_REJECTED,
                Outcome.SUCCESS if seq % 2 else Outcome.FAILURE,
                ctx,
                user_id=f"user-{seq % 4}",
                details={"n": seq, "remaining": seq % 5},
                at=start + timedelta(seconds=seq),
            )
            if seq in checkpoints_at:
                checkpoint_org(uow, services.settings, org, start + timedelta(seconds=seq))
    return org


AUDIT_TABLES = ("audit_events", "audit_checkpoints", "audit_heads")


def tamper(services: Services, change: Callable[[Connection], None]) -> None:
    """Run `change` in one transaction with the audit triggers switched off: as the
    owner on PostgreSQL (the service's own role may not), and on SQLite by
    whoever can write the file."""
    if services.settings.is_sqlite:
        with services.engine.begin() as conn:
            for name in SQLITE_TRIGGER_NAMES:
                conn.execute(text(f"DROP TRIGGER {name}"))
            change(conn)
            for statement in (*SQLITE_TRIGGERS, *SQLITE_CHECKPOINT_TRIGGERS):
                conn.execute(text(statement))
        return
    owner = create_engine(owner_url(services.settings.database_url))
    try:
        with owner.begin() as conn:
            for table in AUDIT_TABLES:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            change(conn)
            for table in AUDIT_TABLES:
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    finally:
        owner.dispose()


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
    with services.unit_of_work() as uow:
        return verify_chain(uow.session, org, services.settings)


def cli_verify(services: Services, org: str, *extra: str) -> tuple[int, str]:
    settings = services.settings
    env = {
        "MFA_VAR_DIR": str(settings.var_dir),
        "MFA_DATABASE_URL": settings.database_url,
        "MFA_BROKER_URL": settings.broker_url,
        "MFA_SECRET_KEY": ",".join(settings.secret_keys),
        "MFA_AUDIT_SIGNING_KEY": base64.b64encode(settings.audit_signing_key).decode(),
    }
    result = CliRunner().invoke(cli, ["audit", "verify", "--org", org, *extra], env=env)
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
    with svc.unit_of_work() as uow:
        head = uow.session.get(AuditHead, org)
        assert head is not None
        assert result.head == {"seq": N, "hash": head.hash}
    assert result.checkpoint is not None
    assert result.checkpoint["seq"] == N and result.checkpoint["verified"] is True
    code, output = cli_verify(svc, org)
    assert code == 0 and f"{org}: ok ({N} events" in output


def test_batches_smaller_than_the_chain_give_the_same_verdicts(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(7, 20))
    with svc.unit_of_work() as uow:
        small = verify_chain(uow.session, org, svc.settings, batch=4)
    assert small.ok and small.events_checked == N and small.checkpoint is not None
    tamper(
        svc, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq == 13))
    )
    with svc.unit_of_work() as uow:
        broken = verify_chain(uow.session, org, svc.settings, batch=4)
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
            type=EventType.CODES_REVOKED,
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


def test_a_rewritten_chain_without_checkpoints_fails_once_a_checkpoint_is_overdue(
    svc: Services,
) -> None:
    """The reason checkpoints exist, and must be continuous: without one, a full
    rewrite is consistent; so events may stay unsigned for twice the interval only."""
    org = build_chain(svc)
    before = verify(svc, org).head
    tamper(svc, lambda c: rewrite_from(c, org, 15))
    after = verify(svc, org)
    assert after.ok and after.unsigned_events == N
    assert before is not None and after.head is not None
    assert after.head["hash"] != before["hash"]  # rewritten, and nothing shows yet
    overdue = datetime.now(UTC) + timedelta(seconds=2 * svc.settings.checkpoint_interval_seconds)
    with svc.unit_of_work() as uow:
        late = verify_chain(uow.session, org, svc.settings, now=overdue)
    assert not late.ok and late.first_bad_seq == 1 and late.unsigned_events == N
    assert late.reason is not None and "no checkpoint covers it" in late.reason


def test_checkpoints_re_signed_with_another_key_are_refused(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    tamper(svc, lambda c: rewrite_from(c, org, 15))
    other = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    forger = replace(svc.settings, audit_signing_key=other)
    tamper(svc, lambda c: c.execute(delete(CHECKPOINTS).where(CHECKPOINTS.c.org_id == org)))
    with svc.unit_of_work() as uow:
        checkpoint_org(uow, forger, org, datetime.now(UTC))
    assert_found(svc, org, N, "signed by an unknown key")


def test_a_checkpoint_whose_fields_were_edited_is_refused(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    tamper(
        svc,
        lambda c: c.execute(
            update(CHECKPOINTS)
            .where(CHECKPOINTS.c.org_id == org, CHECKPOINTS.c.seq == 20)
            .values(seq=21)
        ),
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
    with services.unit_of_work() as uow:
        recorded = uow.session.execute(
            select(AuditEvent.outcome, AuditEvent.details).where(
                AuditEvent.org_id == good, AuditEvent.type == EventType.AUDIT_VERIFIED
            )
        ).one()
    assert recorded.outcome == Outcome.SUCCESS
    assert recorded.details["ok"] is True and recorded.details["events_checked"] == N


# -- the checkpoints attacked ----------------------------------------------------------


def drop_event_and_recompute(conn: Connection, org: str, seq: int) -> None:
    """Erase event `seq` (a user.lockout.started, say), renumber the rest and
    recompute every hash after it, head included: a consistent chain without it."""
    conn.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq == seq))
    shift(conn, org, seq + 1, -1)
    prev = rows(conn, org, seq - 1)[0].hash
    for row in rows(conn, org, seq):
        event = as_event(row, prev_hash=prev)
        event.hash = audit.chain_hash(event, prev)
        conn.execute(
            update(EVENTS).where(EVENTS.c.id == row.id).values(prev_hash=prev, hash=event.hash)
        )
        prev = event.hash
    set_head(conn, org, N - 1)


def delete_checkpoints(org: str, *seqs: int) -> Callable[[Connection], None]:
    where = CHECKPOINTS.c.org_id == org
    if seqs:
        where = where & CHECKPOINTS.c.seq.in_(seqs)
    return lambda conn: conn.execute(delete(CHECKPOINTS).where(where))


def checkpoint_file(services: Services, org: str) -> Path:
    path = checkpoint_file_path(services.settings, org)
    assert path.is_file(), "every committed checkpoint is also a line of the file"
    return path


def test_every_checkpoint_deleted_and_the_chain_recomputed_is_found_by_the_file(
    svc: Services,
) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))

    def change(conn: Connection) -> None:
        delete_checkpoints(org)(conn)
        drop_event_and_recompute(conn, org, 15)

    tamper(svc, change)
    assert len(checkpoint_file(svc, org).read_text().splitlines()) == 3
    assert_found(svc, org, 10, "seq 10 in the checkpoint file is missing")


def test_every_checkpoint_deleted_is_found_by_the_heads_count_without_the_file(
    svc: Services,
) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))

    def change(conn: Connection) -> None:
        delete_checkpoints(org)(conn)
        drop_event_and_recompute(conn, org, 15)

    tamper(svc, change)
    checkpoint_file(svc, org).unlink()
    result = assert_found(svc, org, 1, "3 checkpoints were signed but 0 remain")
    assert result.unsigned_events == N - 1


def test_one_deleted_checkpoint_is_named_by_the_file_and_counted_by_the_head(
    svc: Services,
) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    tamper(svc, delete_checkpoints(org, 20))
    assert_found(svc, org, 20, "seq 20 in the checkpoint file is missing")
    checkpoint_file(svc, org).unlink()
    assert_found(svc, org, 1, "(1 deleted)")


def test_a_checkpoint_differing_from_its_line_in_the_file_is_named(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    path = checkpoint_file(svc, org)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # The file edited instead: a checkpoint the database never had at seq 20.
    lines[1]["signature"] = base64.b64encode(b"x" * 64).decode()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert_found(svc, org, 20, "seq 20 differs from the checkpoint file")


def test_checkpoint_file_lines_written_out_of_seq_order_still_verify(svc: Services) -> None:
    """Two signers (the beat and `audit checkpoint`) may append their lines after their
    commits in either order: each line is held against the row of its seq."""
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    path = checkpoint_file(svc, org)
    first, second, third = path.read_text().splitlines()
    path.write_text("\n".join([second, first, third]) + "\n")
    result = verify(svc, org)
    assert result.ok, result.reason


def test_a_checkpoint_file_line_with_a_seq_that_is_no_number_is_named(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))
    path = checkpoint_file(svc, org)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[1]["seq"] = "twenty"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert_found(svc, org, 1, "line 2 of the checkpoint file is not a checkpoint")


def test_reordered_checkpoints_are_found(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20, N))

    def change(conn: Connection) -> None:
        query = select(CHECKPOINTS.c.id).where(CHECKPOINTS.c.org_id == org)
        first, second, _ = conn.execute(query.order_by(CHECKPOINTS.c.id)).scalars()
        conn.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == first).values(id=-1))
        conn.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == second).values(id=first))
        conn.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.id == -1).values(id=second))

    tamper(svc, change)
    assert_found(svc, org, 10, "out of order")


def test_a_tail_cut_after_the_last_checkpoint_is_found_by_an_expected_head(
    svc: Services,
) -> None:
    org = build_chain(svc, checkpoints_at=(10, 20))
    kept = verify(svc, org)
    assert kept.ok and kept.unsigned_events == N - 20 and kept.head is not None
    at_20 = rows_of(svc, org, 20).hash

    def change(conn: Connection) -> None:
        conn.execute(delete(EVENTS).where(EVENTS.c.org_id == org, EVENTS.c.seq > 20))
        set_head(conn, org, 20)

    tamper(svc, change)
    # Within the interval the cut chain is consistent with its checkpoints...
    assert verify(svc, org).ok
    # ...but not with the head kept elsewhere.
    code, output = cli_verify(svc, org, "--expect", f"{N}:{kept.head['hash']}")
    assert code == 1, output
    assert f"{org}: BROKEN at seq 21" in output and "truncated" in output
    code, output = cli_verify(svc, org, "--expect", f"20:{at_20}")
    assert code == 0, output


def test_expect_exits_1_on_a_hash_mismatch_and_0_on_a_match(svc: Services) -> None:
    org = build_chain(svc, checkpoints_at=(N,))
    at_12 = rows_of(svc, org, 12).hash
    code, output = cli_verify(svc, org, "--expect", f"12:{at_12}")
    assert code == 0 and f"{org}: ok ({N} events" in output, output
    code, output = cli_verify(svc, org, "--expect", f"12:{'0' * 64}")
    assert code == 1 and f"{org}: BROKEN at seq 12" in output, output
    assert "expected hash" in output


def test_expect_needs_org(services: Services) -> None:
    settings = services.settings
    env = {"MFA_VAR_DIR": str(settings.var_dir), "MFA_DATABASE_URL": settings.database_url}
    result = CliRunner().invoke(cli, ["audit", "verify", "--expect", f"1:{'0' * 64}"], env=env)
    assert result.exit_code == 2 and "--expect needs --org" in result.output


def test_unsigned_events_are_reported_and_fail_once_older_than_twice_the_interval(
    svc: Services,
) -> None:
    org = build_chain(svc, checkpoints_at=(20,))
    fresh = verify(svc, org)
    assert fresh.ok and fresh.unsigned_events == N - 20
    with svc.unit_of_work() as uow:
        oldest = uow.session.execute(
            select(AuditEvent.occurred_at).where(AuditEvent.org_id == org, AuditEvent.seq == 21)
        ).scalar_one()
    limit = timedelta(seconds=2 * svc.settings.checkpoint_interval_seconds)
    with svc.unit_of_work() as uow:
        just_in_time = verify_chain(uow.session, org, svc.settings, now=oldest + limit)
        overdue = verify_chain(
            uow.session, org, svc.settings, now=oldest + limit + timedelta(seconds=1)
        )
    assert just_in_time.ok
    assert not overdue.ok and overdue.first_bad_seq == 21 and overdue.unsigned_events == N - 20
    with svc.unit_of_work() as uow:
        checkpoint_org(uow, svc.settings, org, datetime.now(UTC))
    with svc.unit_of_work() as uow:
        signed = verify_chain(uow.session, org, svc.settings, now=oldest + 10 * limit)
    assert signed.ok and signed.unsigned_events == 0


def rows_of(services: Services, org: str, seq: int) -> Any:
    with services.engine.connect() as conn:
        return rows(conn, org, seq)[0]
