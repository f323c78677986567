"""Fixtures for the attack tests: the real app with a real worker thread on SQLite.

One world per module: stopping the embedded worker costs seconds, and every test
makes its own organization and users, so nothing is shared but the process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from domain.migrate import upgrade
from tests.conftest import make_settings
from tests.integration.api_helpers import ApiWorld, api_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path_factory.mktemp("attacks"))
    upgrade(settings.database_url)
    with api_world(settings) as built:
        yield built
