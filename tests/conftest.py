"""Fixtures that every level uses: settings and services on a fresh database
(SQLite, or PostgreSQL for the session), and the brokers where they answer.
The builders and helpers behind them are in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.migrate import upgrade
from infra.services import Services
from infra.settings import Settings
from tests.support.postgres import fresh_postgres_database
from tests.support.services import AMQP_URL, REDIS_URL, require_service
from tests.support.settings import make_settings


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
