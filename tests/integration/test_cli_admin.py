"""db upgrade, org create, user create, token issue: as an operator types them."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cli.main import cli
from domain import tokens
from domain.audit.types import EventType
from domain.models import ApiToken, AuditEvent
from infra.services import Services
from infra.settings import Settings
from tests.support.settings import FAST_ARGON2, TEST_SECRET_KEY


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
        with services.unit_of_work() as uow:
            row = tokens.authenticate(uow.session, token)
            assert row is not None and row.role == "user" and row.principal_id == "alice"
            stored = uow.session.execute(select(ApiToken.token_hash)).scalars().all()
            assert token not in stored
            event_text = " ".join(
                str(e.details) for e in uow.session.execute(select(AuditEvent)).scalars()
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
        with services.unit_of_work() as uow:
            rekeyed = uow.session.scalars(
                select(AuditEvent).where(AuditEvent.type == EventType.SECRETS_REKEYED)
            ).all()
            assert sorted(e.org_id for e in rekeyed) == ["acme", "globex"]
            assert {e.actor_role for e in rekeyed} == {"operator"}
    finally:
        services.close()


def _issued(env: dict[str, str], *args: str) -> tuple[str, str]:
    """(token id from the standard-error line, the token from the last line of output)."""
    code, out, err = invoke(env, "token", "issue", *args)
    assert code == 0, err
    found = re.match(r"^token (\S+) for ", err)
    assert found, err
    return found.group(1), out.strip().splitlines()[-1]


def test_token_ttl_list_and_revoke(env: dict[str, str]) -> None:
    invoke(env, "db", "upgrade")
    invoke(env, "org", "create", "acme")
    invoke(env, "user", "create", "acme", "alice")
    short_id, short = _issued(env, "acme", "alice", "--role", "user", "--ttl", "15m")
    forever_id, forever = _issued(env, "acme", "frontend", "--role", "service")

    services = Services.build(Settings.from_env(env=env, dotenv=None))
    try:
        with services.unit_of_work() as uow:
            row = tokens.authenticate(uow.session, short)
            assert row is not None and row.expires_at is not None
            lifetime = row.expires_at - row.created_at
            assert lifetime == timedelta(minutes=15)
            assert tokens.authenticate(uow.session, forever).expires_at is None  # type: ignore[union-attr]
            [issued] = uow.session.scalars(
                select(AuditEvent).where(
                    AuditEvent.type == EventType.TOKEN_ISSUED, AuditEvent.user_id == "alice"
                )
            ).all()
            assert issued.details["ttl_seconds"] == 900

        code, out, err = invoke(env, "token", "revoke", forever_id)
        assert code == 0, err
        assert out.startswith(f"token {forever_id} for frontend (service) in acme revoked")
        with services.unit_of_work() as uow:
            assert tokens.authenticate(uow.session, forever) is None  # revoked at once
            assert tokens.authenticate(uow.session, short) is not None
            [revoked] = uow.session.scalars(
                select(AuditEvent).where(AuditEvent.type == EventType.TOKEN_REVOKED)
            ).all()
            assert revoked.details["revoked_token_id"] == forever_id
            assert (revoked.actor_principal_id, revoked.actor_role) == ("cli", "operator")
    finally:
        services.close()

    code, out, _ = invoke(env, "token", "list", "acme")
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert header.split() == [
        "TOKEN_ID", "PRINCIPAL", "ROLE", "KIND", "CREATED", "EXPIRES", "LAST_USED", "REVOKED"
    ]  # fmt: skip
    by_id = {line.split()[0]: line for line in lines}
    assert set(by_id) == {short_id, forever_id}
    assert "REVOKED" in by_id[forever_id] and "never" in by_id[forever_id]
    assert "REVOKED" not in by_id[short_id] and "never" not in by_id[short_id]
    assert short not in out and forever not in out
    # A revoked token stays revoked; an unknown one is a clear error.
    assert invoke(env, "token", "revoke", forever_id)[0] == 0
    code, _, err = invoke(env, "token", "revoke", "no-such-token")
    assert code == 1 and "no such token" in err


@pytest.mark.parametrize("ttl", ["59s", "366d", "15x", "-5m", ""])
def test_a_ttl_out_of_range_or_malformed_is_a_usage_error(env: dict[str, str], ttl: str) -> None:
    invoke(env, "db", "upgrade")
    invoke(env, "org", "create", "acme")
    code, out, err = invoke(env, "token", "issue", "acme", "svc", "--role", "service", "--ttl", ttl)
    assert code == 2 and "--ttl" in err
    assert tokens.PREFIX not in out


@pytest.mark.parametrize(
    "ttl, seconds", [("60", 60), ("60s", 60), ("2h", 7200), ("365d", 365 * 86400)]
)
def test_ttl_units(env: dict[str, str], ttl: str, seconds: int) -> None:
    from cli.admin import parse_ttl

    assert parse_ttl(ttl) == timedelta(seconds=seconds)
