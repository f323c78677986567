"""db upgrade, org create, user create, token issue: as an operator types them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cli.main import cli
from domain import audit_types as types
from domain import tokens
from domain.models import ApiToken, AuditEvent
from domain.services import Services
from domain.settings import Settings
from tests.conftest import FAST_ARGON2, TEST_SECRET_KEY


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "MFA_VAR_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "MFA_SECRET_KEY": TEST_SECRET_KEY,
        **FAST_ARGON2,
    }


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_full_setup_prints_the_token_last_and_stores_only_its_hash(env: dict[str, str]) -> None:
    assert invoke(env, "db", "upgrade")[0] == 0
    assert invoke(env, "org", "create", "acme")[0] == 0
    assert invoke(env, "user", "create", "acme", "alice", "--email", "alice@example.com")[0] == 0
    code, out, _ = invoke(env, "token", "issue", "acme", "alice", "--role", "user")
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert token.startswith(tokens.PREFIX)

    services = Services.build(Settings.from_env(env=env, dotenv=None))
    try:
        with services.unit_of_work() as session:
            row = tokens.authenticate(session, token)
            assert row is not None and row.role == "user" and row.principal_id == "alice"
            stored = session.execute(select(ApiToken.token_hash)).scalars().all()
            assert token not in stored
            event_text = " ".join(
                str(e.details) for e in session.execute(select(AuditEvent)).scalars()
            )
            assert token not in event_text
    finally:
        services.close()


def test_unknown_org_is_a_clear_error(env: dict[str, str]) -> None:
    invoke(env, "db", "upgrade")
    code, _, err = invoke(env, "user", "create", "nope", "alice")
    assert code == 1
    assert "no organization 'nope'" in err


def test_duplicate_user_is_refused(env: dict[str, str]) -> None:
    invoke(env, "db", "upgrade")
    invoke(env, "org", "create", "acme")
    assert invoke(env, "user", "create", "acme", "bob")[0] == 0
    code, _, err = invoke(env, "user", "create", "acme", "bob")
    assert code == 1
    assert "already exists" in err


def test_duplicate_org_and_bad_org_id_are_refused(env: dict[str, str]) -> None:
    invoke(env, "db", "upgrade")
    assert invoke(env, "org", "create", "acme")[0] == 0
    assert invoke(env, "org", "create", "acme")[0] == 1
    code, _, err = invoke(env, "org", "create", "Not Valid!")
    assert code == 1 and "organization ids" in err


def test_user_token_needs_an_existing_user_and_role_is_checked(env: dict[str, str]) -> None:
    invoke(env, "db", "upgrade")
    invoke(env, "org", "create", "acme")
    assert invoke(env, "token", "issue", "acme", "ghost", "--role", "user")[0] == 1
    code, _, err = invoke(env, "token", "issue", "acme", "svc", "--role", "root")
    assert code == 2 and "root" in err
    assert invoke(env, "token", "issue", "acme", "frontend", "--role", "service")[0] == 0


def test_bad_settings_exit_2_without_echoing_the_value(env: dict[str, str]) -> None:
    env = {**env, "MFA_SECRET_KEY": "definitely-not-a-fernet-key"}
    code, _, err = invoke(env, "org", "create", "acme")
    assert code == 2
    assert "MFA_SECRET_KEY" in err and "definitely-not" not in err


def test_keys_rotate_reports_the_count(env: dict[str, str]) -> None:
    invoke(env, "db", "upgrade")
    code, out, _ = invoke(env, "keys", "rotate")
    assert code == 0
    assert out.startswith("0 secrets re-encrypted")


def test_keys_rotate_reports_the_count_and_is_on_every_chain(env: dict[str, str]) -> None:
    invoke(env, "db", "upgrade")
    invoke(env, "org", "create", "acme")
    invoke(env, "org", "create", "globex")
    invoke(env, "user", "create", "acme", "alice")
    code, out, _ = invoke(env, "keys", "rotate")
    assert code == 0 and out.strip().endswith("re-encrypted under the newest key")
    services = Services.build(Settings.from_env(env=env, dotenv=None))
    try:
        with services.unit_of_work() as session:
            rekeyed = session.scalars(
                select(AuditEvent).where(AuditEvent.type == types.SECRETS_REKEYED)
            ).all()
            assert sorted(e.org_id for e in rekeyed) == ["acme", "globex"]
            assert {e.actor_role for e in rekeyed} == {"operator"}
    finally:
        services.close()
