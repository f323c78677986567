"""mfa-codes audit export / checkpoint / public-key, as an operator types them."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import select

from cli.main import cli
from domain import accounts, audit
from domain.audit import checkpoint_file
from domain.audit.checkpoints import as_record, checkpoint_org, message
from domain.audit.types import EventType, Outcome
from domain.models import AuditCheckpoint, AuditEvent
from infra.services import Services
from tests.support.builders import unique

CLI_MAIN = "from cli.main import main; main()"


def env_of(services: Services) -> dict[str, str]:
    s = services.settings
    return {
        "MFA_VAR_DIR": str(s.var_dir),
        "MFA_DATABASE_URL": s.database_url,
        "MFA_SECRET_KEY": ",".join(s.secret_keys),
        "MFA_AUDIT_SIGNING_KEY": base64.b64encode(s.audit_signing_key).decode(),
    }


def invoke(services: Services, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env_of(services))
    return result.exit_code, result.stdout, result.stderr


def make_org(services: Services, users: int = 3) -> str:
    org = unique("cli")
    with services.unit_of_work() as uow:
        accounts.create_org(uow, org, audit.CLI)
        for i in range(users):
            accounts.create_user(uow, org, f"user-{i}", None, audit.CLI)
    return org


def test_export_ndjson_is_the_whole_chain_oldest_first_and_is_audited(services: Services) -> None:
    org = make_org(services)
    code, out, err = invoke(services, "audit", "export", "--org", org)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events[0]["type"] == EventType.ORG_CREATED and events[1]["user_id"] == "user-0"
    assert events[1]["prev_hash"] == events[0]["hash"]
    assert "exporting" not in err  # no progress bar: stderr is not a terminal here
    with services.unit_of_work() as uow:
        exported = uow.session.execute(
            select(AuditEvent).where(
                AuditEvent.org_id == org, AuditEvent.type == EventType.AUDIT_EXPORTED
            )
        ).scalar_one()
        assert exported.seq == 5
        assert exported.details == {"filters": {}, "count": 4, "format": "ndjson", "via": "cli"}
        assert exported.actor_principal_id == "cli"


def test_export_csv_with_filters_to_a_file(services: Services, tmp_path: Path) -> None:
    org = make_org(services)
    target = tmp_path / "out.csv"
    code, out, err = invoke(
        services,
        "audit", "export", "--org", org, "--format", "csv",
        "--type", "user.*", "--since", "2000-01-01T00:00:00Z", "--output", str(target),
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert "3 events written" in err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["user_id"] for r in rows] == ["user-0", "user-1", "user-2"]
    assert {r["type"] for r in rows} == {EventType.USER_CREATED}
    assert json.loads(rows[0]["details"]) == {}


def test_export_refuses_bad_filters_and_unknown_orgs(services: Services) -> None:
    org = make_org(services, users=0)
    code, _, err = invoke(services, "audit", "export", "--org", org, "--since", "soon")
    assert code == 2 and "--since" in err
    code, _, err = invoke(services, "audit", "export", "--org", "nobody-here")
    assert code == 1 and "no organization" in err


def test_checkpoint_signs_the_head_once_and_the_public_key_checks_it(services: Services) -> None:
    org = make_org(services)
    code, out, _ = invoke(services, "audit", "checkpoint", "--org", org)
    assert code == 0 and f"{org}: checkpoint at seq 4" in out
    code, out, _ = invoke(services, "audit", "checkpoint")
    assert code == 0 and out.strip() == "0 checkpoints written"  # the head has not moved
    code, pem, _ = invoke(services, "audit", "public-key")
    assert code == 0 and pem.startswith("-----BEGIN PUBLIC KEY-----")
    key = load_pem_public_key(pem.encode())
    assert isinstance(key, Ed25519PublicKey)
    with services.unit_of_work() as uow:
        cp = uow.session.execute(
            select(AuditCheckpoint).where(AuditCheckpoint.org_id == org)
        ).scalar_one()
        head_hash = uow.session.execute(
            select(AuditEvent.hash).where(AuditEvent.org_id == org, AuditEvent.seq == 4)
        ).scalar_one()
    assert cp.hash == head_hash
    # Anyone with the PEM can check it, without this code base's helpers.
    key.verify(base64.b64decode(cp.signature), message(org, cp.seq, cp.hash, cp.signed_at))


def test_checkpoint_without_org_signs_every_moved_head(services: Services) -> None:
    a, b = make_org(services), make_org(services)
    code, out, _ = invoke(services, "audit", "checkpoint")
    assert code == 0 and out.strip() == "2 checkpoints written"
    with services.unit_of_work() as uow:
        audit.append(uow, a, EventType.AUDIT_READ, Outcome.SUCCESS, audit.CLI)
    code, out, _ = invoke(services, "audit", "checkpoint")
    assert out.strip() == "1 checkpoints written"
    with services.unit_of_work() as uow:
        signed = uow.session.execute(
            select(AuditCheckpoint.org_id, AuditCheckpoint.seq).order_by(AuditCheckpoint.id)
        ).all()
    assert [tuple(r) for r in signed] == [*sorted([(a, 4), (b, 4)]), (a, 5)]


def test_progress_bar_only_when_stderr_is_a_terminal(services: Services) -> None:
    org = make_org(services)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CLI_MAIN, "audit", "export", "--org", org],
            env={**os.environ, **env_of(services)},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 4  # the events, and nothing else, on stdout
    assert b"exporting" in shown and b"100%" in shown


def test_a_checkpoint_leaves_the_database_once_committed_as_a_log_line_and_a_file_line(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    org = make_org(services)
    path = checkpoint_file.path_for(services.settings, org)
    with pytest.raises(RuntimeError), services.unit_of_work() as uow:
        assert checkpoint_org(uow, services.settings, org, datetime.now(UTC)) is not None
        raise RuntimeError("rolled back")
    assert not path.exists(), "a checkpoint rolled back never leaves the database"
    caplog.set_level(logging.INFO, logger="mfa.audit.checkpoint")
    code, out, _ = invoke(services, "audit", "checkpoint", "--org", org)
    assert code == 0 and f"{org}: checkpoint at seq 4" in out
    with services.unit_of_work() as uow:
        row = uow.session.execute(
            select(AuditCheckpoint).where(AuditCheckpoint.org_id == org)
        ).one()[0]
        record = as_record(row)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [record]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    logged = [r for r in caplog.records if r.name == "mfa.audit.checkpoint"]
    assert len(logged) == 1
    assert {k: getattr(logged[0], f"checkpoint_{k}") for k in record} == record
    code, out, _ = invoke(services, "audit", "verify", "--org", org)
    assert code == 0 and "head at seq 4, 0 not yet signed" in out
