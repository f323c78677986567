"""POST /v1/users/{user_id}/backup-codes/verify and POST /v1/users/{user_id}/totp/verify:
the sign-in front end (role `service`)."""

from __future__ import annotations

import falcon

from api import representations
from api.bodies import TotpVerification, Verification, present, read_body
from api.resources.base import Resource
from domain import signin, totp_signin
from domain.errors import NotFound
from infra.db import utcnow
from infra.services import Services

MAX_USER_ID = 128  # users.external_id is a VARCHAR(128)


def possible_user_id(user_id: str) -> str:
    """The path's user id, or the 404 of a user that does not exist (same body) when
    no user can have it: PostgreSQL refuses a NUL in a text parameter, which would
    otherwise surface as a 500 from the lookup."""
    if "\x00" in user_id or len(user_id) > MAX_USER_ID:
        raise NotFound("no such user")
    return user_id


class BackupCodeVerification(Resource):
    roles = ("service",)

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        body = read_body(req, Verification)
        user_id = possible_user_id(user_id)
        p = req.context.principal
        with self.services.unit_of_work() as uow:
            result = signin.verify_backup_code(
                uow,
                self.services,
                p.org_id,
                user_id,
                body.code,
                utcnow(),
                req.context.audit,
                client_ip=present(body.client_ip),
                user_agent=present(body.user_agent),
            )
        resp.media = representations.verification(result)


class TotpCheck(Resource):
    roles = ("service",)

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        body = read_body(req, TotpVerification)
        user_id = possible_user_id(user_id)
        p = req.context.principal
        with self.services.unit_of_work() as uow:
            result = totp_signin.verify_totp(
                uow,
                self.services,
                p.org_id,
                user_id,
                body.totp,
                utcnow(),
                req.context.audit,
                client_ip=present(body.client_ip),
                user_agent=present(body.user_agent),
            )
        resp.media = representations.totp_check(result)


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/users/{user_id}/backup-codes/verify", BackupCodeVerification(services))
    app.add_route("/v1/users/{user_id}/totp/verify", TotpCheck(services))
