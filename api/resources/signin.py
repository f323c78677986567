"""POST /v1/users/{user_id}/backup-codes/verify: the sign-in front end (role `service`)."""

from __future__ import annotations

import falcon

from api.bodies import read_object
from domain import signin
from domain.db import utcnow
from domain.services import Services


class BackupCodeVerification:
    roles = ("service",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        body = read_object(req, {"code": str}, required=("code",))
        p = req.context.principal
        with self.services.unit_of_work() as session:
            result = signin.verify_backup_code(
                session,
                self.services,
                p.org_id,
                user_id,
                body["code"],
                utcnow(),
                req.context.audit,
            )
        resp.cache_control = ["no-store"]
        resp.media = result.as_dict()


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/users/{user_id}/backup-codes/verify", BackupCodeVerification(services))
