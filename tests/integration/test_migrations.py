"""`alembic upgrade head` then autogenerate finds no drift, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from domain import accounts, admin, signin
from domain.codes import CodeHasher
from domain.models import Base
from infra.db import make_engine
from infra.migrate import alembic_config, current_heads, upgrade
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import NOW, SIGNIN_CTX
from tests.support.codes import legacy_codes
from tests.support.postgres import fresh_postgres_database, owner_url
from tests.support.settings import make_settings


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_schema_matches_models(settings: Settings) -> None:
    assert _drift(settings.database_url) == []


@pytest.mark.postgres
def test_postgres_schema_matches_models(pg_database_url: str) -> None:
    assert _drift(pg_database_url) == []


def test_one_head_and_every_table_created(settings: Settings) -> None:
    assert len(current_heads(settings.database_url)) == 1
    engine = create_engine(settings.database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables


def _seed_at_0002(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (id, backup_codes_enabled, code_count, created_at)"
                    " VALUES ('acme', true, 5, '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO users (id, org_id, external_id, locked_until, created_at)"
                    " VALUES ('u1', 'acme', 'alice', NULL, '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO totp_enrollments (user_id, secret_ciphertext, drift, created_at)"
                    " VALUES ('u1', :secret, 0, '2026-01-01 00:00:00')"
                ),
                {"secret": b"\x00"},
            )
            conn.execute(
                text(
                    "INSERT INTO auth_failures (user_id, kind, occurred_at)"
                    " VALUES ('u1', 'totp', '2026-01-01 00:00:00')"
                )
            )
    finally:
        engine.dispose()


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608
                for t in ("users", "totp_enrollments", "auth_failures")
            }
    finally:
        engine.dispose()


def test_the_attempt_limits_revision_keeps_every_user_and_enrollment_on_sqlite(
    tmp_path: Path,
) -> None:
    """Rebuilding `users` to drop a column (Alembic's batch mode) cascaded, with
    SQLite's foreign keys on, into every enrollment and code of the embedded default."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    _seed_at_0002(url)
    upgrade(url)
    assert _counts(url) == {"users": 1, "totp_enrollments": 1, "auth_failures": 1}


@pytest.mark.postgres
def test_the_attempt_limits_revision_round_trips_on_postgres() -> None:
    with fresh_postgres_database("mfa_migrate") as app_url:
        url = owner_url(app_url)  # migrations run as the owner; the service's role owns nothing
        command.downgrade(alembic_config(url), "0002")
        _seed_at_0002(url)
        upgrade(url, app_url=app_url)
        assert _counts(url) == {"users": 1, "totp_enrollments": 1, "auth_failures": 1}
        assert _drift(url) == []


# --- a set of the 12-symbol format, made before migration 0006 ------------------------


def _seed_a_12_symbol_set_at_0005(url: str, hasher: CodeHasher) -> list[str]:
    """An enrolled user holding 5 codes made by the generator of that time (frozen in
    tests/support/codes.py), written as the schema of 0005 had them; their display forms."""
    codes = legacy_codes(5)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (id, backup_codes_enabled, code_count, created_at)"
                    " VALUES ('acme', true, 5, '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO users (id, org_id, external_id, created_at)"
                    " VALUES ('u1', 'acme', 'alice', '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO totp_enrollments"
                    " (user_id, secret_ciphertext, confirmed_at, drift, created_at)"
                    " VALUES ('u1', :secret, '2026-01-01 00:00:00', 0, '2026-01-01 00:00:00')"
                ),
                {"secret": b"\x00"},
            )
            for code in codes:
                conn.execute(
                    text(
                        "INSERT INTO backup_codes (id, user_id, set_id, generation, position,"
                        " locator, hash, created_at)"
                        " VALUES (:id, 'u1', 'OLD-SET', 1, :position, :locator, :hash,"
                        " '2026-01-01 00:00:00')"
                    ),
                    {
                        "id": f"c{code.position}",
                        "position": code.position,
                        "locator": code.locator,
                        "hash": hasher.hash(code.value),
                    },
                )
    finally:
        engine.dispose()
    return [c.display for c in codes]


def _the_old_set_after_upgrading(settings: Settings, shown: list[str]) -> tuple[object, ...]:
    """Sign in with one of the old codes, then read the set's status: (accepted,
    mistyped, remaining) of the sign-in, then (format, remaining, total, last used) of
    the set, or None for a user without one."""
    svc = Services.build(settings)
    try:
        with svc.unit_of_work() as uow:
            result = signin.verify_backup_code(uow, svc, "acme", "alice", shown[3], NOW, SIGNIN_CTX)
        with svc.unit_of_work() as uow:
            user = accounts.get_user(uow.session, "acme", "alice")
            current = admin.mfa_status(uow.session, svc, user).backup_codes
    finally:
        svc.close()
    status = (
        None
        if current is None
        else (current.format, current.remaining, current.total, current.last_used_at)
    )
    return (result.accepted, result.mistyped, result.remaining), status


# Accepted, counted against a set of 5 that still reports the old format.
OLD_SET_AFTER_UPGRADE = ((True, False, 4), (12, 4, 5, NOW))


def test_a_12_symbol_set_made_before_0006_verifies_after_upgrading_on_sqlite(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings.database_url, "0005")
    shown = _seed_a_12_symbol_set_at_0005(settings.database_url, CodeHasher(1024, 1))
    upgrade(settings.database_url)
    assert _the_old_set_after_upgrading(settings, shown) == OLD_SET_AFTER_UPGRADE


@pytest.mark.postgres
def test_a_12_symbol_set_made_before_0006_verifies_after_upgrading_on_postgres(
    tmp_path: Path,
) -> None:
    with fresh_postgres_database("mfa_migrate") as app_url:
        url = owner_url(app_url)
        command.downgrade(alembic_config(url), "0005")
        shown = _seed_a_12_symbol_set_at_0005(url, CodeHasher(1024, 1))
        upgrade(url, app_url=app_url)
        settings = make_settings(tmp_path, MFA_DATABASE_URL=app_url)
        assert _the_old_set_after_upgrading(settings, shown) == OLD_SET_AFTER_UPGRADE
