"""Self-service MFA (role `user`; the principal is the user): status and enrollment."""

from __future__ import annotations

import falcon

from api import representations
from api.bodies import read_object
from domain import accounts, admin, enrollment
from infra.db import utcnow
from infra.services import Services


class MfaStatus:
    roles = ("user",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        p = req.context.principal
        with self.services.unit_of_work() as uow:
            user = accounts.get_user(uow.session, p.org_id, p.principal_id)
            resp.media = admin.mfa_status(uow.session, self.services, user)
        resp.cache_control = ["no-store"]


class Enrollment:
    roles = ("user",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        read_object(req, {}, allow_empty=True)  # no fields; an empty body or {} only
        p = req.context.principal
        with self.services.unit_of_work() as uow:
            user = accounts.get_user(uow.session, p.org_id, p.principal_id)
            secret, uri = enrollment.start_enrollment(uow, self.services, user, req.context.audit)
        resp.status = falcon.HTTP_201
        resp.cache_control = ["no-store"]
        resp.media = {"secret": secret, "otpauth_uri": uri}


class EnrollmentConfirmation:
    roles = ("user",)

    def __init__(self, services: Services) -> None:
        self.services = services

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_object(req, {"totp": str}, required=("totp",))
        p = req.context.principal
        with self.services.unit_of_work() as uow:
            user = accounts.get_user(uow.session, p.org_id, p.principal_id)
            reg = enrollment.confirm_enrollment(
                uow, self.services, user, body["totp"], utcnow(), req.context.audit
            )
            first = None if reg is None else representations.regeneration(reg)
        resp.status = falcon.HTTP_201
        resp.cache_control = ["no-store"]
        resp.media = {"enrolled": True, "regeneration": first}


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/me/mfa", MfaStatus(services))
    app.add_route("/v1/me/mfa/enrollment", Enrollment(services))
    app.add_route("/v1/me/mfa/enrollment/confirm", EnrollmentConfirmation(services))
