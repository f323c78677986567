"""Bearer tokens, browser sessions and roles.

A resource declares the roles it admits (`roles = ("user",)` on its class);
authentication runs for every /v1 route, so no resource can forget it.

A browser page authenticates with the session cookie (domain.ui_sessions) instead:
the bearer header wins where both come; a session token counts only from the cookie
and a bearer token only from the header (a leaked session cannot be replayed by a
script, a bearer token planted in a cookie opens nothing). A cookie-authenticated
request that changes state, or fetches a sheet (which ends it), must carry the
page's X-CSRF-Token (`require_csrf`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

import falcon
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain import throttles, tokens, ui_sessions
from domain.errors import CsrfFailed, Forbidden, TooManyAttempts, Unauthenticated
from domain.models import ApiToken, TokenKind
from infra.db import not_waiting_for_locks
from infra.services import Services
from infra.settings import Settings

log = logging.getLogger(__name__)


SESSION_COOKIE = "mfa_session"
# Behind HTTPS: Secure, and the __Host- prefix (no Domain, Path=/, set over HTTPS
# only), so no sibling host can plant or shadow it.
SECURE_SESSION_COOKIE = "__Host-mfa_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Principal:
    token_id: str
    org_id: str
    principal_id: str
    role: str
    kind: str = TokenKind.BEARER
    # The session token, when the cookie authenticated the request (for the CSRF
    # check and nothing else); kept out of repr, so out of any log line.
    session_token: str | None = field(default=None, repr=False)

    @property
    def by_cookie(self) -> bool:
        return self.session_token is not None


def behind_https(settings: Settings) -> bool:
    return settings.public_url.lower().startswith("https://")


def cookie_name(settings: Settings) -> str:
    return SECURE_SESSION_COOKIE if behind_https(settings) else SESSION_COOKIE


def set_session_cookie(
    resp: falcon.Response, settings: Settings, session_token: str, max_age: int
) -> None:
    resp.set_cookie(
        cookie_name(settings),
        session_token,
        # A string: Falcon leaves out a falsy Max-Age, and the clearing cookie needs 0.
        max_age=str(max(max_age, 0)),  # type: ignore[arg-type]
        path="/",
        secure=behind_https(settings),
        http_only=True,
        same_site="Strict",
    )


def clear_session_cookie(resp: falcon.Response, settings: Settings) -> None:
    set_session_cookie(resp, settings, "", 0)


def _cookie(req: falcon.Request, settings: Settings) -> str | None:
    # Exactly one: two cookies of that name mean one was planted (cookie tossing).
    values = req.get_cookie_values(cookie_name(settings)) or []
    if len(values) != 1 or not values[0]:
        return None
    return values[0]


def _bearer(req: falcon.Request) -> str | None:
    header = req.get_header("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(
    req: falcon.Request, services: Services, source_ip: str, *, cookie_only: bool = False
) -> Principal:
    """The principal of the bearer header or, without one, of the session cookie
    (`cookie_only`: the cookie alone, for GET /ui/session)."""
    presented = None if cookie_only else _bearer(req)
    kind = TokenKind.BEARER
    if presented is None:
        presented, kind = _cookie(req, services.settings), TokenKind.SESSION
    if presented is None:
        _failed(services, source_ip, "Send Authorization: Bearer <token>")
    # One read, no transaction around it: autocommit spares a BEGIN and a COMMIT
    # round trip on every request.
    with (
        services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        Session(bind=conn) as session,
    ):
        now = datetime.now(UTC)
        row = tokens.authenticate(session, presented, now)
        # A token counts only where its kind belongs: a session from the cookie, a
        # bearer token from the header.
        if row is not None and row.kind == kind:
            if tokens.due_for_use_mark(row, now):
                _mark_used(conn, session, row, now)
            return Principal(
                row.id,
                row.org_id,
                row.principal_id,
                row.role,
                row.kind,
                presented if kind == TokenKind.SESSION else None,
            )
    _failed(services, source_ip, "The token is unknown, expired or revoked")


def needs_csrf(req: falcon.Request) -> bool:
    """What a cookie-authenticated request may do only with the page's CSRF token:
    change state, or fetch a sheet (the fetch ends it)."""
    return req.method not in _SAFE_METHODS or req.path.endswith("/sheet")


def require_csrf(req: falcon.Request, principal: Principal, secret_keys: tuple[str, ...]) -> None:
    if principal.session_token is None or not needs_csrf(req):
        return
    presented = req.get_header(CSRF_HEADER)
    if not ui_sessions.csrf_matches(secret_keys, principal.session_token, presented):
        raise CsrfFailed(f"Send the page's {CSRF_HEADER} header (GET /ui/session gives it)")


def _mark_used(conn: Connection, session: Session, row: ApiToken, now: datetime) -> None:
    """last_used_at, at most once a minute a token (the row just read says when it was
    last written): one conditional UPDATE in the same autocommit connection, which
    waits for no lock and whose failure never fails the request (it is bookkeeping)."""
    try:
        with not_waiting_for_locks(conn):
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
