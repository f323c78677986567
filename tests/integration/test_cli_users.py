"""user list and user show: what GET /v1/users and GET /v1/users/{id} show, as an
operator reads it; never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from domain import audit, enrollment, tokens, users
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import insert_codes
from tests.support.settings import FAST_ARGON2, TEST_SECRET_KEY


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {
        "MFA_VAR_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "MFA_SECRET_KEY": TEST_SECRET_KEY,
        **FAST_ARGON2,
    }
    assert invoke(env, "db", "upgrade")[0] == 0
    assert invoke(env, "org", "create", "acme")[0] == 0
    return env


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def seed(env: dict[str, str]) -> tuple[str, str]:
    """ada (pending enrollment, 5 codes), bob (bare); the TOTP secret and a token."""
    services = Services.build(Settings.from_env(env=env, dotenv=None))
    try:
        with services.unit_of_work() as uow:
            ada, _ = users.upsert(
                uow, "acme", "ada", {"email": "ada@example.org", "display_name": "Ada L"}, audit.CLI
            )
            secret, _ = enrollment.start_enrollment(uow, services, ada, audit.CLI)
            ada_id = ada.id
            _, token = tokens.issue(uow, "acme", "ada", "user", audit.CLI)
        insert_codes(services, ada_id, 5)
        with services.unit_of_work() as uow:
            users.upsert(uow, "acme", "bob", {}, audit.CLI)
    finally:
        services.close()
    return secret, token


def test_user_list_is_a_table_oldest_first(env: dict[str, str]) -> None:
    secret, token = seed(env)
    code, out, _ = invoke(env, "user", "list", "acme")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "USER_ID", "DISPLAY_NAME", "EMAIL", "CREATED", "ENROLLED", "CODES", "LOCKED"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["ada", "bob"]
    assert "Ada L" in lines[1] and "ada@example.org" in lines[1] and "5/5" in lines[1]
    assert lines[2].split()[1:3] == ["-", "-"]
    assert secret not in out and token not in out


def test_user_show_lists_what_the_api_shows(env: dict[str, str]) -> None:
    secret, token = seed(env)
    code, out, _ = invoke(env, "user", "show", "acme", "ada")
    assert code == 0
    shown = {k.rstrip(":"): v for k, v in (line.split(None, 1) for line in out.splitlines())}
    expected = {
        "user_id": "ada",
        "email": "ada@example.org",
        "recovery_email": "-",
        "display_name": "Ada L",
        "mfa.enrolled": "false",
        "mfa.backup_codes.remaining": "5",
        "mfa.backup_codes.total": "5",
        "mfa.limits.totp_locked": "false",
    }
    assert {k: shown.get(k) for k in expected} == expected
    assert "created_at" in shown and "mfa.backup_codes.set_id" in shown
    assert secret not in out and token not in out


def test_unknown_user_or_org_is_a_clear_error(env: dict[str, str]) -> None:
    code, _, err = invoke(env, "user", "show", "acme", "nobody")
    assert code == 1 and "no such user" in err
    code, _, err = invoke(env, "user", "list", "nope")
    assert code == 1 and "no organization 'nope'" in err
