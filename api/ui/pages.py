"""GET /ui/<page> and /ui/static/...: the pages' HTML, CSS and ES modules, and the
headers every /ui answer carries.

Everything is read once, when the app is made, from the package's data
(api/ui/html/*.html, api/ui/static/**): a request only looks a name up in a dict, so
no path a client sends ever reaches the file system (no traversal to refuse). Each
file is gzipped once there too, and static files carry a strong ETag (a hash of the
bytes, one per encoding) for `If-None-Match`; they are revalidated on every use
(`no-cache`), the HTML is never stored (`no-store`: a page may show codes).

A page resource declares `roles`, so the middleware authenticates it like /v1
(bearer header or session cookie, api.auth). A page whose HTML file is not there
gets no route: its owner adds the file, and it is served.

`UiHeaders` sets the security headers on every /ui answer, errors included, and
turns a 401, 403 or 404 of a page into a small HTML page for a browser (a client
asking for JSON keeps problem+json).
"""

from __future__ import annotations

import gzip
import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

import falcon

from api.errors import PROBLEM
from infra.services import Services

PREFIX = "/ui"

# api/ui/html/<name>.html served at /ui/<name>, for these roles (None: public).
PAGES: dict[str, tuple[str, ...] | None] = {
    "enter": None,
    "security": ("user",),
    "audit": ("auditor",),
    "admin": ("admin",),
}
# Whom a page is for, in the words of the 403 page.
AUDIENCE = {
    "user": "the account holder (a link from your application)",
    "auditor": "the security team (role auditor)",
    "admin": "the organization's administrators (role admin)",
}

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    """One file as served: its bytes, gzipped once, and a strong ETag for each."""

    body: bytes
    gzipped: bytes | None  # None when gzip would not make it smaller
    content_type: str
    etag: str
    gzip_etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        digest = hashlib.sha256(body).hexdigest()[:32]
        # mtime=0: the same bytes give the same gzip, in every process.
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        return cls(
            body=body,
            gzipped=packed if len(packed) < len(body) else None,
            content_type=content_type,
            etag=f'"{digest}"',
            # Another encoding is another representation: a strong ETag of its own.
            gzip_etag=f'"{digest}-gz"',
        )


def accepts_gzip(header: str | None) -> bool:
    """Accept-Encoding names gzip (or *) with a quality above zero (RFC 9110 §12.5.3)."""
    for part in (header or "").split(","):
        name, *params = (p.strip() for p in part.split(";"))
        if name.lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def none_match(header: str | None, etag: str) -> bool:
    """If-None-Match holds `etag` (weak comparison, as RFC 9110 §13.1.2 says) or `*`."""
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def send(req: falcon.Request, resp: falcon.Response, asset: Asset, *, revalidate: bool) -> None:
    """The asset, gzipped where the client takes it; with `revalidate`, its ETag and a
    304 when the client already holds it."""
    packed = asset.gzipped is not None and accepts_gzip(req.get_header("Accept-Encoding"))
    if asset.gzipped is not None:
        resp.vary = ["Accept-Encoding"]
    etag = asset.gzip_etag if packed else asset.etag
    if revalidate:
        resp.cache_control = ["no-cache"]
        resp.set_header("ETag", etag)
        if none_match(req.get_header("If-None-Match"), etag):
            resp.status = falcon.HTTP_304
            return
    resp.content_type = asset.content_type
    if packed:
        resp.set_header("Content-Encoding", "gzip")
        resp.data = asset.gzipped
    else:
        resp.data = asset.body


def load(folder: Traversable) -> dict[str, Asset]:
    """Every servable file directly in `folder`, by name."""
    found: dict[str, Asset] = {}
    if not folder.is_dir():
        return found
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if item.is_file() and not item.name.startswith(".") and suffix in CONTENT_TYPES:
            found[item.name] = Asset.of(item.read_bytes(), CONTENT_TYPES[suffix])
    return found


class PublicPage:
    """A page anyone may load (the enter page: its script holds the credential)."""

    public: ClassVar[bool] = True
    no_store: ClassVar[bool] = True

    def __init__(self, name: str, asset: Asset) -> None:
        self.name = name
        self.asset = asset

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send(req, resp, self.asset, revalidate=False)

    on_head = on_get


class Page(PublicPage):
    """A page for some roles: the middleware authenticates it (api.middleware)."""

    public: ClassVar[bool] = False

    def __init__(self, name: str, asset: Asset, roles: tuple[str, ...]) -> None:
        super().__init__(name, asset)
        self.roles = roles


class StaticFiles:
    public: ClassVar[bool] = True
    no_store: ClassVar[bool] = False

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    def on_get(self, req: falcon.Request, resp: falcon.Response, file: str) -> None:
        asset = self.assets.get(file)
        if asset is None:
            raise falcon.HTTPNotFound(description="No such file")
        send(req, resp, asset, revalidate=True)

    on_head = on_get


# --- the security headers, and the errors a browser reads ------------------------------


def _prefers_html(req: falcon.Request) -> bool:
    accept = req.get_header("Accept") or ""
    return (
        "text/html" in accept
        and req.client_prefers([falcon.MEDIA_HTML, falcon.MEDIA_JSON]) == falcon.MEDIA_HTML
    )


def error_page(title: str, *paragraphs: str) -> str:
    """A page without script, styled by the one stylesheet (the CSP allows no inline
    style), for a browser that hit a 401, 403 or 404 under /ui."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (
        '<!DOCTYPE html>\n<html lang="en" data-state="error"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)} · MFA backup codes</title>"
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/ui/static/ui.css"></head>\n'
        '<body><header class="topbar"><span class="brand">MFA backup codes</span></header>'
        f'<main id="main"><h1>{html.escape(title)}</h1>'
        f'<div class="notice notice-warning">{body}</div></main></body></html>\n'
    )


def _explain(req: falcon.Request, status: int, resource: Any) -> str:
    if status == 401:
        return error_page(
            "You are not signed in",
            "Open this page again from the link in your application.",
            "A link signs you in once and works for two minutes, so a bookmark or an "
            "old link of this page cannot sign you in; after 15 minutes without use, or "
            "8 hours in all, the session ends and you need a new link.",
        )
    if status == 403:
        roles = getattr(resource, "roles", None) or ()
        audience = " or ".join(AUDIENCE.get(r, f"role {r}") for r in roles) or "another role"
        principal = getattr(req.context, "principal", None)
        held = f" You are signed in with role {principal.role}." if principal else ""
        return error_page(
            "This page is not for this account",
            f"This page is for {audience}.{held}",
            "Ask for a link made for that role, or open your own page from your application.",
        )
    return error_page(
        "No such page",
        "There is no page at this address. Open the page from the link in your application.",
    )


class UiHeaders:
    """Middleware: the security headers on every /ui answer; 401/403/404 of a page or
    static file as HTML for a browser."""

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if req.path != PREFIX and not req.path.startswith(PREFIX + "/"):
            return
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)
        status = resp.status_code
        ours = resource is None or isinstance(resource, PublicPage | StaticFiles)
        if (
            status in (401, 403, 404)
            and ours
            and req.method in ("GET", "HEAD")
            and resp.content_type == PROBLEM
            and _prefers_html(req)
        ):
            resp.content_type = falcon.MEDIA_HTML
            resp.media = None
            resp.text = _explain(req, status, resource)
            resp.cache_control = ["no-store"]


def route_templates() -> list[str]:
    """Every path this module may route (a page without its file is not routed)."""
    return [f"{PREFIX}/{name}" for name in PAGES] + [
        f"{PREFIX}/static/{{file}}",
        f"{PREFIX}/static/lib/{{file}}",
    ]


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    root = resources.files("api.ui")
    app.add_middleware(UiHeaders())
    pages = load(root / "html")
    for name, roles in PAGES.items():
        asset = pages.get(f"{name}.html")
        if asset is None:
            continue  # not written yet: its owner adds the file
        page = PublicPage(name, asset) if roles is None else Page(name, asset, roles)
        app.add_route(f"{PREFIX}/{name}", page)
    static = root / "static"
    app.add_route(f"{PREFIX}/static/{{file}}", StaticFiles(load(static)))
    app.add_route(f"{PREFIX}/static/lib/{{file}}", StaticFiles(load(static / "lib")))
