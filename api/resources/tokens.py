"""Tokens over the API: a user token for a signed-in user (roles `service`, `admin`),
the organization's tokens reviewed and revoked (role `admin`), and sign-out (any role)."""

from __future__ import annotations

import falcon

from api import representations
from api.auth import clear_session_cookie
from api.bodies import UserTokenRequest, present, read_body
from api.resources.base import Resource
from api.resources.signin import possible_user_id
from domain import tokens
from domain.errors import InvalidRequest
from infra.services import Services

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
_QUERY = frozenset({"role", "principal_id", "include_revoked", "limit", "cursor"})
_BOOLEANS = {"true": True, "false": False}


class UserTokens(Resource):
    roles = ("service", "admin")

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        body = read_body(req, UserTokenRequest, allow_empty=True)
        ttl = present(body.ttl_seconds)
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            row, plaintext = tokens.issue_user_token(
                uow,
                req.context.principal.org_id,
                user_id,
                tokens.DEFAULT_USER_TOKEN_TTL if ttl is None else ttl,
                req.context.audit,
            )
            resp.media = representations.issued_token(row, plaintext)
        resp.status = falcon.HTTP_201


def _one(req: falcon.Request, name: str) -> str | None:
    values = req.get_param_as_list(name)
    if not values:
        return None
    if len(values) != 1:
        raise InvalidRequest(f"{name} may be given only once", field=name)
    return values[0]


class OrgTokens(Resource):
    roles = ("admin",)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        for name in req.params:
            if name not in _QUERY:
                raise InvalidRequest(f"unknown query parameter {name!r}", field=name[:64])
        role = _one(req, "role")
        if role is not None and role not in tokens.ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(tokens.ROLES)}", field="role")
        principal_id = _one(req, "principal_id")
        if principal_id is not None and not (
            0 < len(principal_id) <= 128 and principal_id.isprintable()
        ):
            raise InvalidRequest(
                "principal_id must be 1 to 128 printable characters", "principal_id"
            )
        include = _one(req, "include_revoked")
        if include is not None and include not in _BOOLEANS:
            raise InvalidRequest("include_revoked must be true or false", field="include_revoked")
        raw_limit = _one(req, "limit")
        limit = DEFAULT_LIMIT
        if raw_limit is not None:
            ok = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4
            if not ok or not 1 <= int(raw_limit) <= MAX_LIMIT:
                raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", "limit")
            limit = int(raw_limit)
        cursor = _one(req, "cursor")
        with self.services.unit_of_work() as uow:
            page, next_cursor = tokens.page_of_tokens(
                uow.session,
                req.context.principal.org_id,
                limit=limit,
                after=None if cursor is None else tokens.TokenCursor.decode(cursor),
                include_revoked=True if include is None else _BOOLEANS[include],
                role=role,
                principal_id=principal_id,
            )
        resp.media = representations.token_page(page, next_cursor)


class OrgToken(Resource):
    roles = ("admin",)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, token_id: str) -> None:
        with self.services.unit_of_work() as uow:
            tokens.revoke(uow, token_id, req.context.audit, org_id=req.context.principal.org_id)
        resp.status = falcon.HTTP_204


class MyToken(Resource):
    roles = ()  # any role: every principal may sign out

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        p = req.context.principal
        with self.services.unit_of_work() as uow:
            tokens.revoke(uow, p.token_id, req.context.audit, org_id=p.org_id, reason="signed-out")
        if p.by_cookie:  # a page signing out: its browser forgets the session too
            clear_session_cookie(resp, self.services.settings)
        resp.status = falcon.HTTP_204


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/users/{user_id}/tokens", UserTokens(services))
    app.add_route("/v1/org/tokens", OrgTokens(services))
    app.add_route("/v1/org/tokens/{token_id}", OrgToken(services))
    app.add_route("/v1/me/token", MyToken(services))
