"""POST and GET /ui/session: a ui-link's ticket traded for the session cookie, and a
reloaded page's CSRF token given back.

Not /v1 and no bearer token (`public`): the ticket is the credential of the POST,
the cookie that of the GET. Against login CSRF (a foreign page signing the browser
in to the attacker's session) the POST takes JSON only, which a cross-site form
cannot send, and refuses a foreign `Origin` (or a `Sec-Fetch-Site` other than
`same-origin`). A source gets 10 POSTs a minute, as
the repudiation link: a ticket has 256 bits, the limit keeps floods off the table.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

import falcon

from api.auth import authenticate, set_session_cookie
from api.bodies import UiTicket, read_body
from api.middleware import client_ip, throttle_source, user_agent
from domain import audit, ui_sessions
from domain.clock import rfc3339_millis, utcnow
from domain.errors import Forbidden, Unauthenticated
from domain.models import ApiToken
from infra.services import Services

PATH = "/ui/session"
PER_MINUTE = 10


def origin_of(url: str) -> str:
    """scheme://host[:port] as a browser writes it in `Origin` (default port left out)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    return f"{scheme}://{host}{port}"


def answer(view: ui_sessions.SessionView, csrf_token: str) -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "role": view.role,
        "page": view.page,
        "expires_at": rfc3339_millis(view.expires_at),
        "principal_id": view.principal_id,
        "org_id": view.org_id,
        "org_name": view.org_name,
    }


class UiSession:
    # No bearer token (api.app's start-up check accepts `public`): see the module.
    public: ClassVar[bool] = True
    no_store: ClassVar[bool] = True

    def __init__(self, services: Services) -> None:
        self.services = services
        self.origin = origin_of(services.settings.public_url)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        source = throttle_source(self.services, req, "ui-session", PER_MINUTE)
        origin = req.get_header("Origin")
        if origin is not None and origin.strip().lower() != self.origin:
            raise Forbidden("This page may be opened only from this service's own origin")
        # Where a browser also says where the call comes from, only our own pages may
        # make it (a sibling subdomain is `same-site`, not ours).
        fetched_from = (req.get_header("Sec-Fetch-Site") or "same-origin").strip().lower()
        if fetched_from != "same-origin":
            raise Forbidden("This page may be opened only from this service's own origin")
        media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        if media_type != falcon.MEDIA_JSON:
            raise falcon.HTTPUnsupportedMediaType(
                description="Content-Type must be application/json"
            )
        body = read_body(req, UiTicket)
        where = audit.Context(
            request_id=req.context.request_id,
            source_ip=source,
            user_agent=user_agent(req),
            server_request_id=req.context.server_request_id,
        )
        with self.services.unit_of_work() as uow:
            view, token = ui_sessions.redeem(uow, body.ticket, where, utcnow())
        settings = self.services.settings
        lifetime = int(ui_sessions.SESSION_LIFETIME.total_seconds())
        set_session_cookie(resp, settings, token, lifetime)
        resp.media = answer(view, ui_sessions.csrf_token(settings.secret_keys, token))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        source = client_ip(req, self.services.settings.trusted_proxies)
        principal = authenticate(req, self.services, source, cookie_only=True)
        with self.services.unit_of_work() as uow:
            row = uow.session.get(ApiToken, principal.token_id)
            # Gone since the lookup (the user was deleted): as if revoked.
            if row is None or principal.session_token is None:
                raise Unauthenticated("The session has ended")
            view = ui_sessions.view(row)
        keys = self.services.settings.secret_keys
        resp.media = answer(view, ui_sessions.csrf_token(keys, principal.session_token))


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route(PATH, UiSession(services))
