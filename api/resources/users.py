"""Users over the API: the organization's application provisions them (roles `admin`
and `service`), and a user reads their own security events (role `user`)."""

from __future__ import annotations

from typing import Any

import falcon

from api import representations
from api.bodies import UserProfile, read_body
from api.resources.base import Resource
from api.resources.signin import possible_user_id
from domain import accounts, admin, users
from domain.errors import InvalidRequest
from domain.models import User
from domain.uow import UnitOfWork
from infra.services import Services

_PAGE_PARAMS = frozenset({"limit", "cursor"})
_EVENT_PARAMS = frozenset({"limit"})


def _params(req: falcon.Request, known: frozenset[str]) -> dict[str, str]:
    """The query's parameters, each at most once and each known, else 422 naming it."""
    found: dict[str, str] = {}
    for name, value in req.params.items():
        if name not in known:
            raise InvalidRequest(f"Unknown query parameter {name!r}", field=name[:64])
        if not isinstance(value, str):
            raise InvalidRequest(f"{name!r} may be given once", field=name)
        found[name] = value
    return found


class _UserResource(Resource):
    def represent(self, uow: UnitOfWork, row: User) -> dict[str, Any]:
        return representations.user(row, admin.mfa_status(uow.session, self.services, row))


class UserItem(_UserResource):
    roles = ("service", "admin")
    method_roles = {"DELETE": ("admin",)}

    def on_put(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        body = read_body(req, UserProfile)
        with self.services.unit_of_work() as uow:
            row, created = users.upsert(
                uow, req.context.principal.org_id, user_id, body.given(), req.context.audit
            )
            resp.media = self.represent(uow, row)
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200

    def on_get(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            row = accounts.get_user(uow.session, req.context.principal.org_id, user_id)
            resp.media = self.represent(uow, row)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            users.delete_user(uow, req.context.principal.org_id, user_id, req.context.audit)
        resp.status = falcon.HTTP_204


class UserCollection(_UserResource):
    roles = ("admin",)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = _params(req, _PAGE_PARAMS)
        limit = users.page_limit(
            params.get("limit"), default=users.DEFAULT_PAGE, maximum=users.MAX_PAGE
        )
        with self.services.unit_of_work() as uow:
            page = users.list_page(
                uow.session, req.context.principal.org_id, limit, params.get("cursor")
            )
            resp.media = {
                "users": [self.represent(uow, row) for row in page.users],
                "next": page.next_cursor,
            }


class OwnEvents(Resource):
    roles = ("user",)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = _params(req, _EVENT_PARAMS)
        limit = users.page_limit(
            params.get("limit"), default=users.DEFAULT_OWN_EVENTS, maximum=users.MAX_OWN_EVENTS
        )
        with self.services.unit_of_work() as uow:
            events = users.own_events(uow.session, self.user(uow, req), limit)
            resp.media = {"events": [representations.own_event(e) for e in events]}


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/users", UserCollection(services))
    app.add_route("/v1/users/{user_id}", UserItem(services))
    app.add_route("/v1/me/events", OwnEvents(services))
