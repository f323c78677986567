"""Every error leaves as RFC 9457 problem+json, mapped in this one place.

Domain errors carry their slug, never a status: STATUS_OF_SLUG below is the one
table from slug to status (and the header rules beside it); Falcon's own errors (unknown route,
bad media, oversize body) get the matching contract slug; anything else is a
500 whose body names nothing but the request id.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon
from falcon.util.misc import code_to_http_status
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api import representations
from domain.errors import DomainError, RegenerationPending, TooManyAttempts, Unauthenticated

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"

# The HTTP status of each problem slug the domain raises (docs/api.md's list of problems).
STATUS_OF_SLUG: dict[str, int] = {
    "domain-error": 400,
    "invalid-request": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "csrf-failed": 403,
    "not-found": 404,
    "backup-codes-disabled": 403,
    "mfa-not-enrolled": 409,
    "already-enrolled": 409,
    "no-pending-enrollment": 409,
    "invalid-totp": 422,
    "too-many-attempts": 429,
    "backup-codes-locked": 429,
    "totp-locked": 429,
    "regeneration-pending": 409,
    "busy": 503,
    "idempotency-key-reused": 422,
    "not-ready": 409,
    "regeneration-failed": 409,
    "sheet-gone": 410,
    "sheet-expired": 410,
    "ticket-gone": 410,
    "conflict": 409,
    "too-many-webhooks": 409,
}


def status_of(error: DomainError) -> int:
    return STATUS_OF_SLUG[error.slug]


_FALCON_SLUGS = {
    400: "invalid-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    411: "invalid-request",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "too-many-attempts",
    503: "unavailable",
}


def _body(slug: str, title: str, status: int, detail: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": f"/problems/{slug}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def _send(resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    resp.status = status
    resp.content_type = PROBLEM
    resp.media = body
    resp.stream = None
    resp.data = None
    resp.text = None  # a page's HTML answer turned into a problem (a 429) must not win
    # A problem never goes into a cache, whatever the resource set before it failed.
    resp.cache_control = ["no-store"]


def handle_domain_error(
    req: falcon.Request, resp: falcon.Response, ex: DomainError, params: dict[str, Any]
) -> None:
    status = status_of(ex)
    _send(resp, status, _body(ex.slug, ex.title, status, ex.detail, field=ex.field))
    # The header rules: a wait that passes, the scheme to authenticate with, the
    # pending regeneration to poll instead.
    if ex.retry_after is not None:
        resp.set_header("Retry-After", str(ex.retry_after))
    if isinstance(ex, Unauthenticated):
        resp.set_header("WWW-Authenticate", "Bearer")
    if isinstance(ex, RegenerationPending):
        resp.location = representations.regeneration_path(ex.regeneration_id)


def refuse_as_throttled(resp: falcon.Response, retry_after: int) -> None:
    """Replace an answer already made with 429 too-many-attempts (a throttled refusal)."""
    error = TooManyAttempts(retry_after, "Too many refused calls; slow down")
    status = status_of(error)
    _send(resp, status, _body(error.slug, error.title, status, error.detail))
    resp.set_header("Retry-After", str(retry_after))


def handle_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    status = ex.status_code
    slug = _FALCON_SLUGS.get(status, "invalid-request" if status < 500 else "unavailable")
    title = ex.title or code_to_http_status(status)
    if title[:3].isdigit():  # Falcon's default title is the status line: "404 Not Found"
        title = title[4:]
    detail = ex.description
    if status == 413:
        detail = detail or "The body is larger than 64 KiB"
    _send(resp, status, _body(slug, str(title), status, detail))
    if ex.headers:
        resp.set_headers(ex.headers)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    # The exception's text may hold SQL parameters: its type goes to the log, nothing
    # to the client but the request id to quote.
    log.error("unhandled %s on %s %s", type(ex).__name__, req.method, req.path, exc_info=ex)
    rid = getattr(req.context, "request_id", None)
    _send(
        resp,
        500,
        _body("internal-error", "Internal error", 500, f"Quote request id {rid} when reporting"),
    )


def handle_database_unavailable(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    # The database is down, unreachable, locked or out of connections: the client may
    # retry, so a 503 rather than a 500. Nothing of the exception reaches the client.
    # (`error`, the name in Falcon's ErrorHandler protocol, lets it take a tuple of types.)
    log.warning(
        "database unavailable on %s %s: %s",
        req.method,
        req.path,
        type(error).__name__,
        exc_info=error,
    )
    _send(
        resp,
        503,
        _body("unavailable", "Service unavailable", 503, "The database does not answer; retry"),
    )
    resp.set_header("Retry-After", "5")


def install(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    # Falcon picks the most specific handler; registration order does not matter.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(DomainError, handle_domain_error)
    for unavailable in (OperationalError, DisconnectionError, PoolTimeout):
        app.add_error_handler(unavailable, handle_database_unavailable)
