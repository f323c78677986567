"""Fixtures of the integration tests (those of every level are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from infra.services import Services


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def svc(request: pytest.FixtureRequest) -> Services:
    """The services on each database: embedded SQLite, then PostgreSQL."""
    name = "services" if request.param == "sqlite" else "pg_services"
    result: Services = request.getfixturevalue(name)
    return result
