"""Fixtures shared by every level: settings, real databases, service detection.

Service-backed tests run wherever the service answers. Where it does not,
they are skipped, unless MFA_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from celery import Celery
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, make_url, text

from infra.migrate import upgrade
from infra.services import Services
from infra.settings import Settings

POSTGRES_URL = os.environ.get(
    "MFA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("MFA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("MFA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("MFA_REQUIRE_SERVICES") == "1"

# Cheap argon2 for tests that are not about argon2's cost.
FAST_ARGON2 = {"MFA_ARGON2_MEMORY_KIB": "1024", "MFA_ARGON2_TIME_COST": "1"}
TEST_SECRET_KEY = Fernet.generate_key().decode()


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, port: int) -> None:
    if _reachable(url, port):
        return
    message = f"{name} is not reachable at {url}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and MFA_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


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


def pg_amqp_settings(tmp: Path, database_url: str, broker_url: str) -> Settings:
    """make_settings on PostgreSQL and RabbitMQ; outside the embedded default the
    audit signing key must be given (it is not created on first use)."""
    return make_settings(
        tmp,
        MFA_DATABASE_URL=database_url,
        MFA_BROKER_URL=broker_url,
        MFA_AUDIT_SIGNING_KEY=base64.b64encode(os.urandom(32)).decode(),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded settings on a fresh, migrated SQLite database."""
    s = make_settings(tmp_path)
    upgrade(s.database_url)
    return s


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = Services.build(settings)
    yield built
    built.close()


def _with_user(url: str, user: str) -> str:
    return make_url(url).set(username=user).render_as_string(hide_password=False)


def owner_url(app_url: str) -> str:
    """The owner's URL of a scratch database that fresh_postgres_database yielded
    (for a test that tampers the way only the owner can)."""
    return _with_user(app_url, make_url(POSTGRES_URL).username or "postgres")


@contextmanager
def fresh_postgres_database(prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A fresh PostgreSQL database, migrated by its owner; yields the URL of an
    application role of its own that owns nothing (as MFA_DATABASE_URL is in
    deployment; owner_url() gives the owner's). Its sessions are ended, it and
    the role are dropped after. `migrate=False`: left empty, for `db upgrade`."""
    require_service("PostgreSQL", POSTGRES_URL, 5432)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    role = f"{name}_app"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    app_url = _with_user(url, role)
    try:
        if migrate:
            upgrade(url, app_url=app_url)
        yield app_url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated, dropped at the end."""
    with fresh_postgres_database("mfa_test") as url:
        yield url


@pytest.fixture
def pg_settings(tmp_path: Path, pg_database_url: str) -> Settings:
    return make_settings(tmp_path, MFA_DATABASE_URL=pg_database_url)


@pytest.fixture
def pg_services(pg_settings: Settings) -> Iterator[Services]:
    built = Services.build(pg_settings)
    yield built
    built.close()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    require_service("RabbitMQ", AMQP_URL, 5672)
    return AMQP_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", REDIS_URL, 6379)
    return REDIS_URL


def unique(prefix: str = "org") -> str:
    """Tests share one database per session; each makes its own organization."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def delete_broker_queues(celery_app: Celery) -> None:
    """Remove an app's queues and exchanges (and what no worker consumed) from the broker."""
    with celery_app.connection_for_write() as conn:
        for queue in celery_app.amqp.queues.values():
            bound = queue.bind(conn.default_channel)
            bound.delete()
            bound.exchange.delete()
