"""Per-request plumbing: the request id, the body limit and authentication.

Authentication runs here for every resource that declares `roles`, so a new
resource cannot forget it. `roles = ()` admits any authenticated principal and
leaves the role check to the resource (the audit resources, which record a
refused reader in the trail).
"""

from __future__ import annotations

import re
import uuid
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import falcon

from api.auth import authenticate, require_role
from domain import audit, logs
from domain import audit_types as types
from domain.errors import Forbidden
from domain.services import Services

MAX_BODY_BYTES = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_USER_AGENT = 256


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
                return str(ip_address(hop))
            except ValueError:
                return peer  # garbage from the proxy chain: fall back to what we know
    return peer


class RequestContext:
    def __init__(self, services: Services) -> None:
        self.services = services

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        offered = req.get_header("X-Request-Id")
        # A caller's id is kept only when it is harmless in logs and audit events.
        rid = offered if offered and _REQUEST_ID.match(offered) else uuid.uuid4().hex
        req.context.request_id = rid
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
        roles = getattr(resource, "roles", None)
        if roles is None:
            return  # an unauthenticated resource: health, readiness, the document, metrics
        principal = authenticate(req, self.services)
        req.context.principal = principal
        # Printable characters only: a NUL would not even fit a PostgreSQL text column.
        agent = "".join(ch for ch in (req.user_agent or "") if ch.isprintable())
        req.context.audit = audit.Context(
            principal_id=principal.principal_id,
            role=principal.role,
            token_id=principal.token_id,
            request_id=req.context.request_id,
            source_ip=client_ip(req, self.services.settings.trusted_proxies),
            user_agent=agent[:MAX_USER_AGENT] if agent else None,
        )
        if roles:
            try:
                require_role(principal, roles)
            except Forbidden:
                # A token tried an endpoint its role may not call: worth a line in the trail.
                with self.services.unit_of_work() as session:
                    audit.append(
                        session,
                        principal.org_id,
                        types.ACCESS_DENIED,
                        types.DENIED,
                        req.context.audit,
                        details={"route": req.uri_template, "method": req.method, "reason": "role"},
                    )
                raise

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        rid = getattr(req.context, "request_id", None)
        if rid:
            resp.set_header("X-Request-Id", rid)
        token = getattr(req.context, "log_token", None)
        if token is not None:
            logs.request_id_var.reset(token)
            req.context.log_token = None
