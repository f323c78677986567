"""On PostgreSQL the service runs as a role that owns nothing: `db upgrade` migrates
as MFA_MIGRATION_DATABASE_URL (the owner) and grants MFA_DATABASE_URL's role what
it needs, tables of later migrations included, and the audit trail append-only."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from cli.main import cli
from tests.support.postgres import fresh_postgres_database, owner_url
from tests.support.settings import FAST_ARGON2, TEST_SECRET_KEY


@pytest.fixture
def empty_database() -> Iterator[str]:
    with fresh_postgres_database("mfa_roles", migrate=False) as app_url:
        yield app_url


def db_upgrade(app_url: str, tmp: str) -> None:
    env = {
        "MFA_VAR_DIR": tmp,
        "MFA_DATABASE_URL": app_url,
        "MFA_MIGRATION_DATABASE_URL": owner_url(app_url),
        "MFA_SECRET_KEY": TEST_SECRET_KEY,
        "MFA_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
        **FAST_ARGON2,
    }
    result = CliRunner().invoke(cli, ["db", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def privileges(url: str, role_url: str) -> dict[str, set[str]]:
    role = role_url.split("://", 1)[1].split("@", 1)[0]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_name, privilege_type FROM information_schema.table_privileges "
                    "WHERE grantee = :role AND table_schema = 'public'"
                ),
                {"role": role},
            ).all()
    finally:
        engine.dispose()
    found: dict[str, set[str]] = {}
    for table, privilege in rows:
        found.setdefault(table, set()).add(privilege)
    return found


def test_db_upgrade_migrates_as_the_owner_and_grants_the_service_role(
    empty_database: str, tmp_path: object
) -> None:
    app = empty_database
    db_upgrade(app, str(tmp_path))
    granted = privileges(owner_url(app), app)
    full = {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert granted["audit_events"] == {"SELECT", "INSERT"}
    assert granted["audit_checkpoints"] == {"SELECT", "INSERT"}
    assert granted["audit_heads"] == {"SELECT", "INSERT", "UPDATE"}
    assert granted["alembic_version"] == {"SELECT"}
    assert granted["users"] == full and granted["organizations"] == full
    engine = create_engine(app)
    try:
        with engine.connect() as conn:
            owners = set(
                conn.execute(
                    text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
            )
            assert owners == {"postgres"}
            with pytest.raises(DBAPIError, match="permission denied for schema public"):
                conn.execute(text("CREATE TABLE mine (id int)"))
    finally:
        engine.dispose()


def test_a_table_of_a_later_migration_is_granted_by_the_next_upgrade(
    empty_database: str, tmp_path: object
) -> None:
    app = empty_database
    db_upgrade(app, str(tmp_path))
    owner = create_engine(owner_url(app))
    try:
        with owner.begin() as conn:  # as a later revision would
            conn.execute(text("CREATE TABLE later_feature (id serial PRIMARY KEY, v int)"))
    finally:
        owner.dispose()
    assert "later_feature" not in privileges(owner_url(app), app)
    db_upgrade(app, str(tmp_path))  # idempotent: run again, it covers the new table
    assert privileges(owner_url(app), app)["later_feature"] == {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
    }
    engine = create_engine(app)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO later_feature (v) VALUES (1)"))  # its sequence too
            conn.execute(text("DELETE FROM later_feature"))
    finally:
        engine.dispose()
