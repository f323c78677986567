"""One-time links to the user's page (role `service`): the application redirects its
signed-in user there instead of handing a bearer token to page script. A service
may ask only for the user's page (`security`), never the auditor's or the
administrator's (those links come from the CLI: mfa-codes ui-link)."""

from __future__ import annotations

import falcon

from api.bodies import UiLinkRequest, read_body
from api.resources.base import Resource
from api.resources.signin import possible_user_id
from domain import ui_sessions
from domain.clock import rfc3339_millis, utcnow
from domain.errors import InvalidRequest
from infra.services import Services


class UiLinks(Resource):
    roles = ("service",)

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        body = read_body(req, UiLinkRequest)
        role = ui_sessions.SERVICE_PAGES.get(body.page)
        if role is None:
            raise InvalidRequest('page must be "security"', field="page")
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            ticket, expires_at = ui_sessions.issue_ticket(
                uow, req.context.principal.org_id, user_id, role, utcnow(), req.context.audit
            )
        resp.media = {
            "url": ui_sessions.link(self.services.settings.public_url, ticket),
            "expires_at": rfc3339_millis(expires_at),
        }
        resp.status = falcon.HTTP_201


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/users/{user_id}/ui-links", UiLinks(services))
