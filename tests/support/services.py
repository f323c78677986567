"""Where the test services are, and what a test does when one does not answer.

Service-backed tests run wherever the service answers. Where it does not, they
are skipped, unless MFA_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "MFA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("MFA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("MFA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("MFA_REQUIRE_SERVICES") == "1"


def reachable(url: str, default_port: int, timeout: float = 2) -> bool:
    """Whether something accepts a TCP connection at the URL's host and port."""
    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, port: int) -> None:
    if reachable(url, port):
        return
    message = f"{name} is not reachable at {url}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and MFA_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)
