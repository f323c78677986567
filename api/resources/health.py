"""GET /healthz and /readyz: unauthenticated, for load balancers and orchestrators."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import falcon
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from infra.services import Services

log = logging.getLogger(__name__)

CACHE_SECONDS = 1.0


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Readiness:
    no_store = True  # api.middleware sets Cache-Control: no-store

    def __init__(self, services: Services, broker_ping: Callable[[], bool]) -> None:
        self.services = services
        self.broker_ping = broker_ping
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, str]] | None = None

    def _database(self) -> bool:
        try:
            autocommit = self.services.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
            with autocommit as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("readiness: database check failed: %s", type(exc).__name__)
            return False
        return True

    def _checks(self) -> dict[str, str]:
        # Unauthenticated and each check opens connections: a flood of probes shares
        # one answer a second instead of opening a broker connection each.
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= CACHE_SECONDS:
                checks = {
                    "database": "ok" if self._database() else "unavailable",
                    "broker": "ok" if self.broker_ping() else "unavailable",
                }
                self._cached = (now, checks)
            return dict(self._cached[1])

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = self._checks()
        ready = all(v == "ok" for v in checks.values())
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ok" if ready else "unavailable", "checks": checks}


def register(
    app: falcon.App[falcon.Request, falcon.Response],
    services: Services,
    broker_ping: Callable[[], bool],
) -> None:
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Readiness(services, broker_ping))
