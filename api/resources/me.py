"""Self-service MFA (role `user`; the principal is the user): status and enrollment."""

from __future__ import annotations

import falcon

from api import representations
from api.bodies import Empty, Totp, read_body
from api.resources.base import Resource
from domain import admin, enrollment
from infra.db import utcnow
from infra.services import Services


class MfaStatus(Resource):
    roles = ("user",)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.services.unit_of_work() as uow:
            status = admin.mfa_status(uow.session, self.services, self.user(uow, req))
        resp.media = representations.mfa_status(status)


class Enrollment(Resource):
    roles = ("user",)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        read_body(req, Empty, allow_empty=True)
        with self.services.unit_of_work() as uow:
            secret, uri = enrollment.start_enrollment(
                uow, self.services, self.user(uow, req), req.context.audit
            )
        resp.status = falcon.HTTP_201
        resp.media = representations.enrollment(secret, uri)


class EnrollmentConfirmation(Resource):
    roles = ("user",)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req, Totp)
        with self.services.unit_of_work() as uow:
            reg = enrollment.confirm_enrollment(
                uow,
                self.services,
                self.user(uow, req),
                body.totp,
                utcnow(),
                req.context.audit,
            )
            resp.media = representations.enrollment_confirmed(reg)
        resp.status = falcon.HTTP_201


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/me/mfa", MfaStatus(services))
    app.add_route("/v1/me/mfa/enrollment", Enrollment(services))
    app.add_route("/v1/me/mfa/enrollment/confirm", EnrollmentConfirmation(services))
