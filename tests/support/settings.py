"""Settings for a test: embedded by default, PostgreSQL and RabbitMQ when asked."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from infra.migrate import upgrade
from infra.settings import Settings

# Cheap argon2 for tests that are not about argon2's cost.
FAST_ARGON2 = {"MFA_ARGON2_MEMORY_KIB": "1024", "MFA_ARGON2_TIME_COST": "1"}
TEST_SECRET_KEY = Fernet.generate_key().decode()


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {
        "MFA_VAR_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": f"sqlite:///{tmp_path / 'mfa.db'}",
        "MFA_BROKER_URL": "filesystem://",
        "MFA_SECRET_KEY": TEST_SECRET_KEY,
        "MFA_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        **FAST_ARGON2,
    }
    base.update(env)
    return Settings.from_env(env=base, dotenv=None)


def new_signing_key() -> str:
    """A fresh audit signing key, as MFA_AUDIT_SIGNING_KEY takes it."""
    return base64.b64encode(os.urandom(32)).decode()


def pg_amqp_settings(tmp: Path, database_url: str, broker_url: str) -> Settings:
    """make_settings on PostgreSQL and RabbitMQ; outside the embedded default the
    audit signing key must be given (it is not created on first use)."""
    return make_settings(
        tmp,
        MFA_DATABASE_URL=database_url,
        MFA_BROKER_URL=broker_url,
        MFA_AUDIT_SIGNING_KEY=new_signing_key(),
    )


def backend_settings(request: pytest.FixtureRequest, tmp: Path) -> Settings:
    """For a fixture with params ["sqlite", "postgres"]: embedded settings on a fresh,
    migrated SQLite database, or the session's PostgreSQL database with RabbitMQ."""
    if request.param == "sqlite":
        settings = make_settings(tmp)
        upgrade(settings.database_url)
        return settings
    return pg_amqp_settings(
        tmp, request.getfixturevalue("pg_database_url"), request.getfixturevalue("amqp_url")
    )
