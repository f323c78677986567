"""Bearer tokens and roles.

A resource declares the roles it admits (`roles = ("user",)` on its class);
authentication runs for every /v1 route, so no resource can forget it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import falcon
from sqlalchemy.orm import Session

from domain import throttles, tokens
from domain.errors import Forbidden, TooManyAttempts, Unauthenticated
from infra.services import Services


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


def authenticate(req: falcon.Request, services: Services, source_ip: str) -> Principal:
    presented = _bearer(req)
    if presented is None:
        _failed(services, source_ip, "Send Authorization: Bearer <token>")
    # One read, no transaction around it: autocommit spares a BEGIN and a COMMIT
    # round trip on every request.
    with (
        services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        Session(bind=conn) as session,
    ):
        row = tokens.authenticate(session, presented)
        if row is not None:
            return Principal(row.id, row.org_id, row.principal_id, row.role)
    _failed(services, source_ip, "The token is unknown, expired or revoked")


def _failed(services: Services, source_ip: str, detail: str) -> NoReturn:
    """401, counted per source; past the minute's limit, 429 (nothing is audited)."""
    with services.unit_of_work() as uow:
        verdict = throttles.hit(
            uow.session, throttles.auth_failure_key(source_ip), throttles.AUTH_FAILURES_PER_MINUTE
        )
    if verdict.over:
        raise TooManyAttempts(verdict.retry_after, "Too many failed authentications; slow down")
    raise Unauthenticated(detail)


def require_role(principal: Principal, roles: tuple[str, ...]) -> None:
    if principal.role not in roles:
        raise Forbidden(f"This endpoint needs a token with role {' or '.join(roles)}")
