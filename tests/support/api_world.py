"""An API world for the integration, attack and fault tests: the real app over a
real database, a real Celery worker thread on the real broker, and helpers to make
organizations, users and tokens. No fixtures here: the modules' fixtures wrap these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest
from celery.contrib.testing.worker import start_worker
from falcon import testing

from api.app import create_app
from domain import accounts, audit, tokens
from infra.migrate import upgrade
from infra.services import Services
from infra.settings import Settings
from infra.webhook_client import WebhookClient
from tests.support.broker import delete_broker_queues
from tests.support.builders import new_org
from tests.support.postgres import fresh_postgres_database
from tests.support.settings import make_settings, pg_amqp_settings
from workers.app import make_celery
from workers.publish import Publisher
from workers.tasks import register_tasks


@dataclass
class ApiWorld:
    settings: Settings
    services: Services
    publisher: Publisher
    client: testing.TestClient
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)

    # --- accounts -------------------------------------------------------------

    def org(self, *, enabled: bool = True, code_count: int = 5) -> str:
        return new_org(self.services, enabled=enabled, code_count=code_count)

    def user(self, org_id: str, external_id: str = "alice") -> str:
        with self.services.unit_of_work() as uow:
            accounts.create_user(uow, org_id, external_id, None, audit.CLI)
        return external_id

    def token(self, org_id: str, principal_id: str, role: str) -> str:
        with self.services.unit_of_work() as uow:
            _, plaintext = tokens.issue(uow, org_id, principal_id, role, audit.CLI)
        return plaintext

    # --- HTTP -----------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> testing.Result:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return self.client.simulate_request(method, path, json=json, headers=sent, **kwargs)

    def enroll(self, org_id: str, external_id: str = "alice") -> tuple[str, dict[str, Any]]:
        """A user enrolled over HTTP: (user token, the confirmation's body)."""
        self.user(org_id, external_id)
        tok = self.token(org_id, external_id, "user")
        started = self.call("POST", "/v1/me/mfa/enrollment", tok)
        assert started.status_code == 201, started.text
        secret = started.json["secret"]
        self.secrets[(org_id, external_id)] = secret
        confirmed = self.call(
            "POST", "/v1/me/mfa/enrollment/confirm", tok, json={"totp": pyotp.TOTP(secret).now()}
        )
        assert confirmed.status_code == 201, confirmed.text
        return tok, confirmed.json

    def totp(self, org_id: str, external_id: str = "alice", offset_steps: int = 0) -> str:
        secret = self.secrets[(org_id, external_id)]
        return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)

    def await_status(
        self,
        token: str,
        regeneration_id: str,
        done: Callable[[str], bool] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Poll the regeneration until its status is final (or `done` says so)."""
        finished = done or (lambda s: s not in ("queued", "processing"))
        deadline = time.monotonic() + timeout
        while True:
            got = self.call("GET", f"/v1/me/backup-codes/regenerations/{regeneration_id}", token)
            assert got.status_code == 200, got.text
            if finished(got.json["status"]):
                return dict(got.json)
            if time.monotonic() > deadline:
                raise AssertionError(f"regeneration still {got.json['status']} after {timeout}s")
            time.sleep(0.05)

    def sheet_text(self, token: str, regeneration_id: str) -> list[str]:
        got = self.call(
            "GET",
            f"/v1/me/backup-codes/regenerations/{regeneration_id}/sheet",
            token,
            headers={"Accept": "text/plain"},
        )
        assert got.status_code == 200, got.text
        return [line for line in got.text.splitlines() if line.strip()]


def _no_dns(host: str, port: int) -> list[str]:
    del host, port
    return []


@contextmanager
def api_world(settings: Settings, *, worker: bool = True) -> Iterator[ApiWorld]:
    """The app, its after-commit publisher and (by default) a real worker thread."""
    services = Services.build(settings)
    celery_app = make_celery(settings)
    # Worker threads in a test process: an AMQP heartbeat wakes kombu's event loop every
    # second (else a stop, and now and then a delivery, waits up to 10 s); no remote
    # control, whose pidbox queue is exclusive to one node name per process.
    celery_app.conf.broker_heartbeat = 2
    celery_app.conf.worker_enable_remote_control = False
    publisher = Publisher(celery_app, services)
    publisher.install()
    # Webhook URLs in tests name 127.0.0.1; a name (a fuzzer's, say) is never resolved by
    # real DNS: the stub refuses it, so nothing leaves the machine.
    client = WebhookClient(settings.webhook_allow_private, _no_dns)
    register_tasks(celery_app, services, publisher, webhook_client=client)
    app = create_app(settings, services, publisher)
    world = ApiWorld(settings, services, publisher, testing.TestClient(app))
    try:
        if worker:
            with start_worker(
                celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10
            ):
                yield world
        else:
            yield world
    finally:
        publisher.uninstall()
        services.close()
        if settings.broker_url.startswith("amqp"):
            delete_broker_queues(celery_app)  # each world's prefix is its own
        celery_app.close()


@contextmanager
def world_on(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[ApiWorld]:
    """For a fixture with params ["sqlite", "postgres"]: a world without a worker on
    the embedded database (migrated), or on a scratch PostgreSQL database of its own
    with RabbitMQ."""
    tmp = tmp_path_factory.mktemp(f"{name}-{request.param}")
    if request.param == "sqlite":
        settings = make_settings(tmp)
        upgrade(settings.database_url)
        with api_world(settings, worker=False) as built:
            yield built
        return
    amqp = request.getfixturevalue("amqp_url")
    with (
        fresh_postgres_database(f"mfa_{name}") as url,
        api_world(pg_amqp_settings(tmp, url, amqp), worker=False) as built,
    ):
        yield built
