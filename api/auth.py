"""Bearer tokens and roles.

A resource declares the roles it admits (`roles = ("user",)` on its class);
authentication runs for every /v1 route, so no resource can forget it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import falcon
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain import throttles, tokens
from domain.errors import Forbidden, TooManyAttempts, Unauthenticated
from infra.db import not_waiting_for_locks
from infra.services import Services

log = logging.getLogger(__name__)


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
    # A Core read: a session and an ORM object cost more than the round trip.
    with services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        now = datetime.now(UTC)
        row = tokens.lookup(conn, presented, now)
        if row is not None:
            if tokens.due_for_use_mark(row, now):
                _mark_used(conn, row, now)
            return Principal(row.id, row.org_id, row.principal_id, row.role)
    _failed(services, source_ip, "The token is unknown, expired or revoked")


def _mark_used(conn: Connection, row: tokens.Presented, now: datetime) -> None:
    """last_used_at, at most once a minute a token (the row just read says when it was
    last written): one conditional UPDATE in the same autocommit connection, which
    waits for no lock and whose failure never fails the request (it is bookkeeping)."""
    try:
        with not_waiting_for_locks(conn), Session(bind=conn) as session:
            tokens.mark_used(session, row.id, now)
    except SQLAlchemyError as exc:
        log.info("last_used_at of token %s not written: %s", row.id, type(exc).__name__)


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
