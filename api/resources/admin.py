"""Administration (role `admin`): policy, revocation of a user's codes, unlock, MFA reset."""

from __future__ import annotations

import falcon

from api.bodies import read_object
from api.resources.signin import possible_user_id
from domain import admin
from infra.services import Services


class Policy:
    roles = ("admin",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.services.unit_of_work() as uow:
            resp.media = admin.get_policy(uow.session, req.context.principal.org_id)

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_object(
            req,
            {"backup_codes_enabled": bool, "code_count": int},
            required=("backup_codes_enabled", "code_count"),
        )
        with self.services.unit_of_work() as uow:
            resp.media = admin.put_policy(
                uow, req.context.principal.org_id, body, req.context.audit
            )


class Revocation:
    roles = ("admin",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        read_object(req, {}, allow_empty=True)
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            admin.revoke_codes(uow, req.context.principal.org_id, user_id, req.context.audit)
        resp.status = falcon.HTTP_204


class UserMfa:
    roles = ("admin",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_delete(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            admin.reset_mfa(uow, req.context.principal.org_id, user_id, req.context.audit)
        resp.status = falcon.HTTP_204


class MfaUnlock:
    roles = ("admin",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        read_object(req, {}, allow_empty=True)
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            admin.unlock(uow, req.context.principal.org_id, user_id, req.context.audit)
        resp.status = falcon.HTTP_204


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/org/policy", Policy(services))
    app.add_route("/v1/users/{user_id}/backup-codes/revocation", Revocation(services))
    app.add_route("/v1/users/{user_id}/mfa", UserMfa(services))
    app.add_route("/v1/users/{user_id}/mfa/unlock", MfaUnlock(services))
