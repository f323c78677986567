""" "If this wasn't you": the page a mail's link opens, and its confirmation.

Unauthenticated (`public`): the ticket in the path is the credential. A GET only
shows the page (mail scanners follow links); the page's form POSTs to the same
path, which acts (domain.notify.repudiation). The path holds a ticket, so the
access logs write it redacted (api.access_log), the answer is never cached, the
page sends no Referer, and a source gets 10 requests a minute.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import ClassVar

import falcon

from api.middleware import MAX_BODY_BYTES, throttle_source, user_agent
from domain.clock import utcnow
from domain.errors import TicketGone
from domain.notify import mail_texts as texts
from domain.notify import repudiation
from infra.services import Services

PER_MINUTE = 10

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1a1a1a}"
    "button{font:inherit;padding:.6rem 1rem;border:2px solid #8a1c1c;background:#8a1c1c;"
    "color:#fff;border-radius:4px;cursor:pointer}"
    "button:focus{outline:3px solid #1a4fa0;outline-offset:2px}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
SECURITY_HEADERS = {
    # No script at all; the one stylesheet by its hash; the form posts here only.
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _page(title: str, paragraph: str, form_action: str | None = None) -> str:
    form = ""
    if form_action is not None:
        action = html.escape(form_action, quote=True)
        form = (
            f'<form method="post" action="{action}">'
            f'<button type="submit">{html.escape(texts.PAGE_BUTTON)}</button></form>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><main><h1>{html.escape(title)}</h1><p>{html.escape(paragraph)}</p>"
        f"{form}</main></body></html>\n"
    )


def _prefers_html(req: falcon.Request) -> bool:
    return req.client_prefers([falcon.MEDIA_HTML, falcon.MEDIA_JSON]) != falcon.MEDIA_JSON


class Repudiation:
    # No bearer token: the ticket is the credential (api.app's check accepts `public`).
    public: ClassVar[bool] = True
    no_store: ClassVar[bool] = True

    def __init__(self, services: Services) -> None:
        self.services = services

    def _throttle(self, req: falcon.Request) -> str:
        return throttle_source(self.services, req, "repudiation", PER_MINUTE)

    @staticmethod
    def _html(resp: falcon.Response, body: str) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = body
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)

    def _gone(self, req: falcon.Request, resp: falcon.Response, error: TicketGone) -> None:
        """410 as a page for a browser (it asks for HTML by name), else problem+json."""
        accept = req.get_header("Accept") or ""
        if "text/html" not in accept or not _prefers_html(req):
            raise error
        resp.status = falcon.HTTP_410
        self._html(resp, _page(texts.GONE_TITLE, texts.GONE_EXPLAIN))

    def on_get(self, req: falcon.Request, resp: falcon.Response, ticket: str) -> None:
        self._throttle(req)
        try:
            with self.services.unit_of_work() as uow:
                repudiation.usable(uow, ticket, utcnow())
        except TicketGone as gone:
            self._gone(req, resp, gone)
            return
        # The form posts back to this very path (relative: no host to get wrong).
        self._html(resp, _page(texts.PAGE_TITLE, texts.PAGE_EXPLAIN, form_action=ticket))

    def on_post(self, req: falcon.Request, resp: falcon.Response, ticket: str) -> None:
        source = self._throttle(req)
        # An empty body or the page's form: whatever it holds means nothing here.
        req.bounded_stream.read(MAX_BODY_BYTES)
        try:
            with self.services.unit_of_work() as uow:
                repudiation.repudiate(
                    uow, ticket, utcnow(), source, user_agent(req), req.context.request_id
                )
        except TicketGone as gone:
            self._gone(req, resp, gone)
            return
        # A browser (or no Accept at all) gets the page; a client asking for JSON, 204.
        if not _prefers_html(req):
            resp.status = falcon.HTTP_204
            return
        self._html(resp, _page(texts.DONE_TITLE, texts.DONE_EXPLAIN))


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route(f"{repudiation.PATH}/{{ticket}}", Repudiation(services))
