"""Fixtures for the attack tests: the real app with a real worker thread, on
PostgreSQL and RabbitMQ (lockouts are counted in the database they run against).

One world per module: stopping the embedded worker costs seconds, and every test
makes its own organization and users, so nothing is shared but the process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api_world import ApiWorld, api_world
from tests.support.settings import pg_amqp_settings


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, pg_database_url: str, amqp_url: str
) -> Iterator[ApiWorld]:
    settings = pg_amqp_settings(tmp_path_factory.mktemp("attacks"), pg_database_url, amqp_url)
    with api_world(settings) as built:
        yield built
