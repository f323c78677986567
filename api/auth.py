"""Bearer tokens and roles.

A resource declares the roles it admits (`roles = ("user",)` on its class);
authentication runs for every /v1 route, so no resource can forget it.
"""

from __future__ import annotations

from dataclasses import dataclass

import falcon
from sqlalchemy.orm import Session

from domain import tokens
from domain.errors import Forbidden, Unauthenticated
from domain.services import Services


@dataclass(frozen=True)
class Principal:
    token_id: str
    org_id: str
    principal_id: str
    role: str


def _bearer(req: falcon.Request) -> str | None:
    header = req.get_header("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(req: falcon.Request, services: Services) -> Principal:
    presented = _bearer(req)
    if presented is None:
        raise Unauthenticated("Send Authorization: Bearer <token>")
    # One read, no transaction around it: autocommit spares a BEGIN and a COMMIT
    # round trip on every request.
    with (
        services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        Session(bind=conn) as session,
    ):
        row = tokens.authenticate(session, presented)
        if row is None:
            raise Unauthenticated("The token is unknown or revoked")
        return Principal(row.id, row.org_id, row.principal_id, row.role)


def require_role(principal: Principal, roles: tuple[str, ...]) -> None:
    if principal.role not in roles:
        raise Forbidden(f"This endpoint needs a token with role {' or '.join(roles)}")
