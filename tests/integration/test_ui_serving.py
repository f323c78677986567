"""Serving the pages (issue 15, items 2, 3 and 5): the security headers on every /ui
answer, errors included; static files with a strong ETag (one per encoding), 304 on
If-None-Match, gzip when accepted, the right content types; no way out of the
package's files; a page's 401 and 403 as HTML for a browser and problem+json for a
client; HTML never stored."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from falcon import testing

from api.ui import pages
from domain import audit, ui_sessions
from domain.clock import utcnow
from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world
from tests.support.settings import make_settings

UI_ROOT = Path(pages.__file__).resolve().parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
# A page for auditors that no page owner will ever write: the role check of a page,
# whatever pages exist on this branch.
TEST_PAGE = "/ui/test-auditors"
TEST_HTML = b"<!DOCTYPE html><title>test</title><p>for auditors</p>\n" * 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path_factory.mktemp("ui-serving"))
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as built:
        asset = pages.Asset.of(TEST_HTML, pages.CONTENT_TYPES[".html"])
        built.client.app.add_route(TEST_PAGE, pages.Page("test", asset, ("auditor",)))
        yield built


@pytest.fixture(scope="module")
def org(world: ApiWorld) -> str:
    org_id = world.org()
    world.user(org_id, "alice")
    return org_id


def static_files() -> list[str]:
    root = UI_ROOT / "static"
    found = [f"/ui/static/{p.name}" for p in root.glob("*") if p.suffix in (".css", ".js")]
    found += [f"/ui/static/lib/{p.name}" for p in (root / "lib").glob("*.js")]
    return sorted(found)


def page_paths() -> list[str]:
    return [f"/ui/{name}" for name in pages.PAGES if (UI_ROOT / "html" / f"{name}.html").exists()]


def assert_secured(got: testing.Result) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert got.headers.get(name) == value, (name, got.status_code, got.headers)


# --- headers everywhere ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/ui/enter", BROWSER, 200),
        ("GET", "/ui/static/ui.css", {}, 200),
        ("GET", "/ui/static/lib/api.js", {}, 200),
        ("GET", "/ui/static/nope.js", {}, 404),
        ("GET", "/ui/static/lib/nope.js", BROWSER, 404),
        ("GET", "/ui/nothing-here", BROWSER, 404),
        ("GET", "/ui/nothing-here", {"Accept": "application/json"}, 404),
        ("GET", TEST_PAGE, BROWSER, 401),
        ("GET", TEST_PAGE, {"Accept": "application/json"}, 401),
        ("POST", "/ui/static/ui.css", {}, 405),
        ("GET", "/ui/session", {"Accept": "application/json"}, 401),
        ("POST", "/ui/session", {"Content-Type": "text/plain"}, 415),
    ],
)
def test_every_ui_answer_carries_the_security_headers(
    world: ApiWorld, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    got = world.call(method, path, headers=headers, body="x" if method == "POST" else None)
    assert got.status_code == status, got.text
    assert_secured(got)


def test_v1_answers_are_left_as_they_were(world: ApiWorld) -> None:
    got = world.call("GET", "/healthz")
    assert got.status_code == 200
    assert "Content-Security-Policy" not in got.headers


# --- static files ----------------------------------------------------------------------


@pytest.mark.parametrize("path", static_files())
def test_static_file_has_a_strong_etag_and_answers_304(world: ApiWorld, path: str) -> None:
    first = world.call("GET", path)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), etag  # strong: no W/
    assert first.headers["Cache-Control"] == "no-cache"
    on_disk = (UI_ROOT / path.removeprefix("/ui/")).read_bytes()
    assert first.content == on_disk
    again = world.call("GET", path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    assert_secured(again)
    # A weak form of the same tag matches too (If-None-Match compares weakly) ...
    assert world.call("GET", path, headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert world.call("GET", path, headers={"If-None-Match": f'"x", {etag}'}).status_code == 304
    # ... another tag does not.
    assert world.call("GET", path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_content_types(world: ApiWorld) -> None:
    assert world.call("GET", "/ui/static/ui.css").headers["Content-Type"] == (
        "text/css; charset=utf-8"
    )
    for path in ("/ui/static/enter.js", "/ui/static/lib/session.js"):
        assert world.call("GET", path).headers["Content-Type"] == "text/javascript; charset=utf-8"
    enter = world.call("GET", "/ui/enter", headers=BROWSER)
    assert enter.headers["Content-Type"] == "text/html; charset=utf-8"
    assert enter.headers["Cache-Control"] == "no-store"
    assert "ETag" not in enter.headers


def test_gzip_when_accepted_with_its_own_etag(world: ApiWorld) -> None:
    path = "/ui/static/ui.css"
    plain = world.call("GET", path, headers={"Accept-Encoding": "identity"})
    packed = world.call("GET", path, headers={"Accept-Encoding": "br, gzip;q=0.8"})
    refused = world.call("GET", path, headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in plain.headers
    assert "Content-Encoding" not in refused.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    for got in (plain, packed, refused):
        assert got.headers["Vary"] == "Accept-Encoding"
    assert len(packed.content) < len(plain.content) / 2
    assert gzip.decompress(packed.content) == plain.content
    assert int(packed.headers["Content-Length"]) == len(packed.content)
    # Two encodings, two representations: each its own strong ETag, each revalidates.
    assert packed.headers["ETag"] != plain.headers["ETag"]
    again = world.call(
        "GET", path, headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]}
    )
    assert again.status_code == 304
    # The HTML is compressed too.
    page = world.call("GET", "/ui/enter", headers={**BROWSER, "Accept-Encoding": "gzip"})
    assert page.headers["Content-Encoding"] == "gzip"
    assert b"/ui/static/enter.js" in gzip.decompress(page.content)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/static/../pages.py",
        "/ui/static/..%2Fpages.py",
        "/ui/static/%2e%2e/%2e%2e/app.py",
        "/ui/static/lib/..%2F..%2Fpages.py",
        "/ui/static/lib/../ui.css/../../pages.py",
        "/ui/static/%2E%2E%2F%2E%2E%2F__init__.py",
        "/ui/static/....//pages.py",
        "/ui/static/..\\pages.py",
        "/ui/static/.",
        "/ui/static/lib",
        "/ui/static/lib/",
        "/ui/static/",
        "/ui/html/enter.html",
        "/ui/static/%00ui.css",
        "/ui/static/ui.css%00.js",
        "/ui/../api/ui/pages.py",
    ],
)
def test_no_path_reaches_outside_the_served_files(world: ApiWorld, path: str) -> None:
    got = world.call("GET", path)
    assert got.status_code in (404, 405), (path, got.status_code)
    assert b"import" not in got.content and b"from __future__" not in got.content


def test_only_the_known_files_are_served() -> None:
    """What the package holds, and nothing else, is what a request can name."""
    served = pages.load(UI_ROOT / "static")
    assert "ui.css" in served and "enter.js" in served
    assert all(name.endswith((".css", ".js", ".svg")) for name in served)


# --- pages and their errors --------------------------------------------------------------


@pytest.mark.parametrize("path", page_paths())
def test_every_present_page_is_html_never_stored(world: ApiWorld, path: str) -> None:
    got = world.call("GET", path, headers=BROWSER)
    # The enter page is public; the others ask for a session.
    assert got.status_code == (200 if path == "/ui/enter" else 401)
    assert got.headers["Content-Type"].startswith("text/html")
    assert got.headers["Cache-Control"] == "no-store"
    assert_secured(got)


def test_enter_page_references_exactly_its_three_files(world: ApiWorld) -> None:
    text = world.call("GET", "/ui/enter", headers=BROWSER).text
    assert '<link rel="stylesheet" href="/ui/static/ui.css">' in text
    assert '<script type="module" src="/ui/static/enter.js"></script>' in text
    assert '<link rel="icon" href="data:image/svg+xml,' in text
    # The CSP forbids them; the page must not need them.
    assert "<script>" not in text and "style=" not in text
    assert re.search(r"\son[a-z]+=", text, re.IGNORECASE) is None


def test_page_without_session_is_401_html_for_a_browser(world: ApiWorld) -> None:
    got = world.call("GET", TEST_PAGE, headers=BROWSER)
    assert got.status_code == 401
    assert got.headers["Content-Type"].startswith("text/html")
    assert got.headers["Cache-Control"] == "no-store"
    assert "open this page again from the link in your application" in got.text.lower()
    assert "<script" not in got.text and "style=" not in got.text


def test_page_without_session_is_problem_json_for_a_client(world: ApiWorld) -> None:
    got = world.call("GET", TEST_PAGE, headers={"Accept": "application/json"})
    assert got.status_code == 401
    assert got.headers["Content-Type"] == "application/problem+json"
    assert got.json["type"] == "/problems/unauthenticated"


def test_wrong_role_is_403_naming_the_pages_role(world: ApiWorld, org: str) -> None:
    user = world.token(org, "alice", "user")
    got = world.call("GET", TEST_PAGE, user, headers=BROWSER)
    assert got.status_code == 403
    assert got.headers["Content-Type"].startswith("text/html")
    assert "this page is for the security team (role auditor)" in got.text.lower()
    assert "signed in with role user" in got.text
    assert_secured(got)
    as_client = world.call("GET", TEST_PAGE, user, headers={"Accept": "application/json"})
    assert as_client.status_code == 403
    assert as_client.json["type"] == "/problems/forbidden"


def test_the_right_role_gets_the_page(world: ApiWorld, org: str) -> None:
    auditor = world.token(org, "sec-team", "auditor")
    got = world.call("GET", TEST_PAGE, auditor, headers=BROWSER)
    assert got.status_code == 200
    assert got.content == TEST_HTML
    assert got.headers["Cache-Control"] == "no-store"


def test_a_session_cookie_opens_the_page(world: ApiWorld, org: str) -> None:
    with world.services.unit_of_work() as uow:
        ticket, _ = ui_sessions.issue_ticket(uow, org, "sec-team", "auditor", utcnow(), audit.CLI)
    entered = world.call(
        "POST",
        "/ui/session",
        body=json.dumps({"ticket": ticket}),
        headers={"Content-Type": "application/json"},
    )
    assert entered.status_code == 200, entered.text
    cookie = entered.cookies["mfa_session"].value
    got = world.call("GET", TEST_PAGE, headers={**BROWSER, "Cookie": f"mfa_session={cookie}"})
    assert got.status_code == 200
    assert got.content == TEST_HTML


def test_the_stylesheet_ends_with_the_page_sections() -> None:
    css = (UI_ROOT / "static" / "ui.css").read_text()
    markers = [f"/* ==== {page} ==== */" for page in ("security", "audit", "admin")]
    at = [css.index(m) for m in markers]
    assert at == sorted(at)


def test_a_page_preloads_only_modules_its_entry_module_imports() -> None:
    """A modulepreload that no import asks for would be a fourth request for nothing
    (and one left behind by a renamed module, a 404)."""
    from tests.browser.conftest import module_graph

    html_dir = Path(__file__).resolve().parents[2] / "api" / "ui" / "html"
    checked = 0
    for page in html_dir.glob("*.html"):
        text = page.read_text()
        preloads = set(re.findall(r'<link rel="modulepreload" href="([^"]+)">', text))
        if not preloads:
            continue
        entry = re.search(r'<script type="module" src="/ui/static/([^"]+)">', text)
        assert entry is not None, page.name
        assert preloads <= module_graph(entry.group(1)) - {f"/ui/static/{entry.group(1)}"}
        checked += 1
    assert checked >= 1
