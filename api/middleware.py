"""Per-request plumbing: the request id, the body limit and authentication.

Authentication runs here for every resource that declares `roles`, so a new
resource cannot forget it; so does the CSRF check of cookie-authenticated calls
(api.auth), audited as a refusal like a wrong role. `roles = ()` admits any
authenticated principal and leaves the role check to the resource (the audit
resources, which record a refused reader in the trail). `method_roles` narrows
`roles` for one method (DELETE /v1/users/{id} is the admin's, its GET and PUT also
the service's).

Throttles (domain.throttles): a failed authentication is counted per source, a
403 or 404 answer per (token, source); past the minute's limit either becomes a
429, an audited refusal before its event is appended.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import falcon

from api.auth import Principal, authenticate, require_csrf, require_role
from api.errors import refuse_as_throttled
from domain import audit, throttles
from domain.audit.types import EventType, Outcome
from domain.errors import CsrfFailed, Forbidden, TooManyAttempts
from domain.sources import source_key
from infra import logs
from infra.services import Services

MAX_BODY_BYTES = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_USER_AGENT = 256


def user_agent(req: falcon.Request) -> str | None:
    """The User-Agent as its sender wrote it, printable characters only.

    WSGI hands header bytes over decoded as Latin-1 (PEP 3333); an agent that is
    valid UTF-8 is decoded as such (else it stays Latin-1, which it then was)."""
    raw = req.user_agent or ""
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        raw = raw.encode("latin-1").decode("utf-8")
    # Printable characters only: a NUL would not even fit a PostgreSQL text column.
    agent = "".join(ch for ch in raw if ch.isprintable())[:MAX_USER_AGENT]
    return agent or None


def client_ip(req: falcon.Request, trusted: tuple[IPv4Network | IPv6Network, ...]) -> str:
    """The peer's address; behind a trusted proxy, the nearest untrusted address of
    X-Forwarded-For (read from the right: anything left of it the client can forge)."""

    def is_trusted(address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    peer = req.remote_addr
    if not trusted or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in (req.get_header("X-Forwarded-For") or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                if "%" in hop:  # a zone names an interface, and can be as long as one likes
                    raise ValueError(hop)
                return str(ip_address(hop))
            except ValueError:
                return peer  # garbage from the proxy chain: fall back to what we know
    return peer


def throttle_source(services: Services, req: falcon.Request, name: str, per_minute: int) -> str:
    """One more `name` request from the caller's source this minute, counted in its own
    committed transaction (so a refused one still counts); past `per_minute`, 429.
    Returns the source. For the public resources, whose caller has no token."""
    source = client_ip(req, services.settings.trusted_proxies)
    with services.unit_of_work() as uow:
        verdict = throttles.hit(uow.session, f"{name}:{source_key(None, source)}", per_minute)
    if verdict.over:
        raise TooManyAttempts(verdict.retry_after, "Too many requests; slow down")
    return source


class RequestContext:
    def __init__(self, services: Services) -> None:
        self.services = services

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        offered = req.get_header("X-Request-Id")
        # A caller's id is kept only when it is harmless in logs and audit events.
        rid = offered if offered and _REQUEST_ID.match(offered) else uuid.uuid4().hex
        req.context.request_id = rid
        # Ours, unique: the caller chooses request_id, so two requests may share one.
        req.context.server_request_id = uuid.uuid4().hex
        req.context.log_token = logs.request_id_var.set(rid)
        resp.set_header("X-Request-Id", rid)
        length = req.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise falcon.HTTPContentTooLarge(
                description=f"The body is larger than {MAX_BODY_BYTES // 1024} KiB"
            )

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        # Falcon's own OPTIONS answer (the allowed methods) was never marked no-store.
        if getattr(resource, "no_store", False) and req.method != "OPTIONS":
            resp.cache_control = ["no-store"]
        roles = getattr(resource, "roles", None)
        if roles is None:
            return  # an unauthenticated resource: health, readiness, the document, metrics
        source_ip = client_ip(req, self.services.settings.trusted_proxies)
        principal = authenticate(req, self.services, source_ip)
        req.context.principal = principal
        req.context.audit = audit.Context(
            principal_id=principal.principal_id,
            role=principal.role,
            token_id=principal.token_id,
            request_id=req.context.request_id,
            source_ip=source_ip,
            user_agent=user_agent(req),
            server_request_id=req.context.server_request_id,
        )
        try:
            # A page's state-changing call without its CSRF token never reaches the
            # resource, whatever its role (api.auth.require_csrf).
            require_csrf(req, principal, self.services.settings.secret_keys)
        except CsrfFailed:
            self._denied(req, principal, source_ip, "csrf")
            raise
        roles = getattr(resource, "method_roles", {}).get(req.method, roles)
        if roles:
            try:
                require_role(principal, roles)
            except Forbidden:
                # A token tried an endpoint its role may not call: worth a line in the trail.
                self._denied(req, principal, source_ip, "role")
                raise

    def _denied(
        self, req: falcon.Request, principal: Principal, source_ip: str, reason: str
    ) -> None:
        with self.services.unit_of_work() as uow:
            throttles.refusal_gate(uow.session, principal.token_id, source_ip)
            audit.append(
                uow,
                principal.org_id,
                EventType.ACCESS_DENIED,
                Outcome.DENIED,
                req.context.audit,
                details={"route": req.uri_template, "method": req.method, "reason": reason},
            )

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        self._count_refusal(req, resp)
        rid = getattr(req.context, "request_id", None)
        if rid:
            resp.set_header("X-Request-Id", rid)
        token = getattr(req.context, "log_token", None)
        if token is not None:
            logs.request_id_var.reset(token)
            req.context.log_token = None

    def _count_refusal(self, req: falcon.Request, resp: falcon.Response) -> None:
        """A 403 or 404 to a known token counts against its (token, source); past the
        minute's limit the answer becomes 429 (audited refusals were already stopped
        before their event by throttles.refusal_gate). 401s have their own count."""
        principal = getattr(req.context, "principal", None)
        if principal is None or resp.status_code not in (403, 404):
            return
        ctx: audit.Context = req.context.audit
        with self.services.unit_of_work() as uow:
            verdict = throttles.hit(
                uow.session,
                throttles.refusal_key(principal.token_id, ctx.source_ip),
                throttles.REFUSALS_PER_MINUTE,
            )
        if verdict.over:
            refuse_as_throttled(resp, verdict.retry_after)
