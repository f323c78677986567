"""GET /healthz and /readyz: unauthenticated, for load balancers and orchestrators."""

from __future__ import annotations

import logging
from collections.abc import Callable

import falcon
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from domain.services import Services

log = logging.getLogger(__name__)


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Readiness:
    def __init__(self, services: Services, broker_ping: Callable[[], bool]) -> None:
        self.services = services
        self.broker_ping = broker_ping

    def _database(self) -> bool:
        try:
            with self.services.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("readiness: database check failed: %s", type(exc).__name__)
            return False
        return True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = {
            "database": "ok" if self._database() else "unavailable",
            "broker": "ok" if self.broker_ping() else "unavailable",
        }
        ready = all(v == "ok" for v in checks.values())
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.cache_control = ["no-store"]
        resp.media = {"status": "ok" if ready else "unavailable", "checks": checks}


def register(
    app: falcon.App[falcon.Request, falcon.Response],
    services: Services,
    broker_ping: Callable[[], bool],
) -> None:
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Readiness(services, broker_ping))
