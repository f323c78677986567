"""The pages in a real browser: Debian's chromium driven by Playwright (sync API), the
real service (`mfa-codes run`: API, worker and scheduler) on 127.0.0.1, started once
for the session.

One browser for the whole session, a fresh context (cookies, storage, permissions) per
test. Where chromium or Playwright is missing the tests skip; under
MFA_REQUIRE_SERVICES=1 (CI) that is a failure. MFA_CHROMIUM names another chromium.

How a page's tests use it (tests/browser/test_<page>_page.py)::

    def test_regenerate(ui: Ui, page: Page, page_log: PageLog, shoot: Shoot, axe: Axe):
        org = ui.org()                            # a fresh organization (codes on)
        alice = ui.user(org, enrolled=True)       # PUT /v1/users + enrollment with pyotp
        ui.enter(page, "user", alice.user_id, org)  # ui-link, then wait for /ui/security
        page.wait_for_selector('html[data-state="ready"]')
        ...                                       # alice.totp() for the 6-digit field
        shoot(page, "security-codes")             # var/screenshots/security-codes-{1280,390}.png
        axe(page)                                 # no serious or critical violation
        page_log.assert_clean()                   # no console error, page error, CSP violation

- `ui.link(role, principal, org)` is the one-time URL (role user: through the API with
  the org's service token, as the application does; auditor, admin: as `mfa-codes
  ui-link` makes it). `ui.enter` opens it and waits until the page it was made for has
  loaded. `ui.expire_link(url)` makes its ticket expire.
- `ui.user(org, enrolled=False)` is a user without MFA; `ui.token(org, principal, role)`
  a bearer token (service, admin, auditor, user); `ui.call(...)` calls the API (as in
  tests/e2e/service.py); `ui.policy(org, backup_codes_enabled=False)` turns codes off;
  `ui.services` is the service's database from the test process (the domain's calls,
  as the CLI makes them, without a Python start each: seconds on a busy machine);
  `ui.cli(...)` runs `mfa-codes` itself against the same database.
- Every context sends its own `X-Forwarded-For` (the service trusts 127.0.0.1 as its
  proxy), so each test is a source of its own: the per-source limits (10 POST
  /ui/session a minute, failed authentications) never carry from one test to the next.
  `ui.enter` of a second context for the same test: `new_page(browser, ui)`.
- `page_log` collects console messages, page errors, CSP violations and every request
  the page made (its URL), for leak checks: `assert code not in page_log.text()`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyotp
import pytest

from domain import accounts, audit, tokens, ui_sessions
from domain.clock import utcnow
from infra.services import Services
from infra.settings import Settings
from tests.e2e.service import Response, Service, running
from tests.support.processes import free_port
from tests.support.services import REQUIRE_SERVICES

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

CHROMIUM = os.environ.get("MFA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000  # a step of a page on this machine takes well under a second
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "var" / "screenshots"
WIDTHS = {1280: 800, 390: 844}  # width: height of the viewport (desktop, a phone)
PAGE_OF_ROLE = {"user": "/ui/security", "auditor": "/ui/audit", "admin": "/ui/admin"}
# Where a CSP violation is also reported (besides chromium's own console line): added
# to every document before its scripts, by Playwright (not subject to the page's CSP).
_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[dev]')"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"chromium is not at {CHROMIUM} (apt-get install chromium, or set MFA_CHROMIUM)"
    return None


def _require_browser() -> None:
    reason = _unavailable()
    if reason is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} and MFA_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


# --- the service and what it holds ------------------------------------------------------


@dataclass
class User:
    org: str
    user_id: str
    secret: str | None = None  # the TOTP secret, when enrolled
    first_regeneration: dict[str, Any] | None = None

    def totp(self, offset_steps: int = 0) -> str:
        assert self.secret, f"{self.user_id} is not enrolled"
        import time

        return pyotp.TOTP(self.secret).at(time.time() + 30 * offset_steps)


@dataclass
class Ui:
    """The running service, for the pages: its base URL and provisioning helpers."""

    svc: Service
    base: str
    _tokens: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # --- plumbing ---
    def cli(self, *args: str) -> str:
        return self.svc.cli(*args)

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: object = None,
        accept: str | None = None,
    ) -> Response:
        return self.svc.call(method, path, token, body, accept)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{os.getpid()}-{next(self._names)}"

    # --- accounts ---
    @functools.cached_property
    def services(self) -> Services:
        """The service's own database, from this process: provisioning here costs a
        transaction, where a `mfa-codes` command costs a Python start (seconds on a
        busy machine). The same domain calls the CLI makes."""
        return Services.build(Settings.from_env(env=self.svc.env, dotenv=None))

    def org(self, *, backup_codes_enabled: bool = True, code_count: int = 5) -> str:
        """A fresh organization (as `mfa-codes org create`), with this policy."""
        org = self.fresh("org")
        with self.services.unit_of_work() as uow:
            accounts.create_org(uow, org, audit.CLI)
        if not backup_codes_enabled or code_count != 5:
            self.policy(org, backup_codes_enabled=backup_codes_enabled, code_count=code_count)
        return org

    def token(self, org: str, principal: str, role: str) -> str:
        """A bearer token (as `mfa-codes token issue`; kept: one per org, principal, role)."""
        key = (org, principal, role)
        if key not in self._tokens:
            with self.services.unit_of_work() as uow:
                _, self._tokens[key] = tokens.issue(uow, org, principal, role, audit.CLI)
        return self._tokens[key]

    def service_token(self, org: str) -> str:
        return self.token(org, "front-end", "service")

    def admin_token(self, org: str) -> str:
        return self.token(org, "ops-admin", "admin")

    def policy(self, org: str, **changes: Any) -> dict[str, Any]:
        admin = self.admin_token(org)
        current = self.call("GET", "/v1/org/policy", admin)
        assert current.status == 200, current.body
        body = {
            k: v
            for k, v in current.json().items()
            if k in ("backup_codes_enabled", "code_count", "notify_users", "support_contact")
        }
        body.update(changes)
        got = self.call("PUT", "/v1/org/policy", admin, body)
        assert got.status == 200, got.body
        answer: dict[str, Any] = got.json()
        return answer

    def user(self, org: str, user_id: str | None = None, *, enrolled: bool = True) -> User:
        """A user made as the application makes one (PUT /v1/users with the service
        token); `enrolled`: MFA enrolled over the API with a TOTP computed here (the
        first set of codes is then on its way, `first_regeneration`)."""
        user_id = user_id or self.fresh("user")
        made = self.call(
            "PUT", f"/v1/users/{user_id}", self.service_token(org), {"display_name": user_id}
        )
        assert made.status in (200, 201), made.body
        user = User(org, user_id)
        if enrolled:
            own = self.user_token(user)
            started = self.call("POST", "/v1/me/mfa/enrollment", own)
            assert started.status == 201, started.body
            user.secret = started.json()["secret"]
            confirmed = self.call(
                "POST", "/v1/me/mfa/enrollment/confirm", own, {"totp": user.totp()}
            )
            assert confirmed.status == 201, confirmed.body
            user.first_regeneration = confirmed.json().get("regeneration")
        return user

    def user_token(self, user: User) -> str:
        """A user token as the application's backend gets one (POST .../tokens)."""
        got = self.call("POST", f"/v1/users/{user.user_id}/tokens", self.service_token(user.org))
        assert got.status == 201, got.body
        token: str = got.json()["token"]
        return token

    # --- the pages ---
    def link(self, role: str, principal: str, org: str) -> str:
        """A one-time ui-link (valid 120 s): a user's from the API with the service
        token, as the application makes it; an auditor's or admin's as the CLI does."""
        if role == "user":
            got = self.call(
                "POST",
                f"/v1/users/{principal}/ui-links",
                self.service_token(org),
                {"page": "security"},
            )
            assert got.status == 201, got.body
            url: str = got.json()["url"]
        else:
            # As `mfa-codes ui-link ORG PRINCIPAL --role ROLE` makes it (that command's
            # own test is in tests/integration/test_ui_sessions.py).
            with self.services.unit_of_work() as uow:
                ticket, _ = ui_sessions.issue_ticket(uow, org, principal, role, utcnow(), audit.CLI)
            url = ui_sessions.link(self.base, ticket)
        assert url.startswith(self.base + "/ui/enter#ticket="), url
        return url

    def expire_link(self, url: str) -> None:
        """Make a link's ticket expire now (as 120 s would), in the service's database."""
        ticket = url.split("#ticket=", 1)[1]
        digest = hashlib.sha256(ticket.encode()).hexdigest()
        with closing(sqlite3.connect(Path(self.svc.env["MFA_VAR_DIR"]) / "mfa.db")) as db:
            changed = db.execute(
                "UPDATE ui_tickets SET expires_at = '2000-01-01 00:00:00.000000' "
                "WHERE ticket_hash = ?",
                (digest,),
            ).rowcount
            db.commit()
        assert changed == 1, "no such ticket"

    def enter(self, page: Page, role: str, principal: str, org: str) -> None:
        """Open a fresh link in `page` and wait until the role's page has loaded."""
        page.goto(self.link(role, principal, org))
        page.wait_for_url(self.base + PAGE_OF_ROLE[role], wait_until="load")


@pytest.fixture(scope="session")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    _require_browser()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    workdir = tmp_path_factory.mktemp("browser-service")
    env = {
        "MFA_PUBLIC_URL": base,
        # The browser's contexts each claim a source of their own (X-Forwarded-For).
        "MFA_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    with running(workdir, env, port=port) as svc:
        made = Ui(svc, base)
        try:
            yield made
        finally:
            if "services" in made.__dict__:
                made.services.close()


# --- the browser -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@dataclass
class PageLog:
    """What a page said and did: console lines, uncaught errors, CSP violations, the
    URLs it requested."""

    # (type, text, URL of the document or resource it is about)
    console: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def csp_violations(self) -> list[str]:
        return [t for _, t, _ in self.console if "CSP violation" in t or "Content Security" in t]

    @property
    def console_errors(self) -> list[str]:
        return [t for kind, t, _ in self.console if kind == "error"]

    def errors_about(self, prefix: str) -> list[str]:
        """Console errors about URLs starting with `prefix` (the document or resource)."""
        return [t for kind, t, url in self.console if kind == "error" and url.startswith(prefix)]

    def text(self) -> str:
        """Everything logged, as one string: look for secrets in it."""
        return "\n".join([t for _, t, _ in self.console] + self.errors + self.requests)

    def assert_clean(self) -> None:
        assert self.errors == [], f"uncaught errors: {self.errors}"
        assert self.csp_violations == [], f"CSP violations: {self.csp_violations}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


_sources = itertools.count(1)


def new_context(browser: Browser, ui: Ui, **options: Any) -> BrowserContext:
    """A fresh context as its own source (X-Forwarded-For 10.x.y.z), at desktop size."""
    n = next(_sources)
    source = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
    context = browser.new_context(
        base_url=ui.base,
        viewport={"width": 1280, "height": WIDTHS[1280]},
        extra_http_headers={"X-Forwarded-For": source},
        **options,
    )
    context.add_init_script(_CSP_LISTENER)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def watch(page: Page, log: PageLog) -> None:
    def on_console(message: ConsoleMessage) -> None:
        log.console.append((message.type, message.text, message.location.get("url", "")))

    page.on("console", on_console)
    page.on("pageerror", lambda error: log.errors.append(str(error)))
    page.on("request", lambda request: log.requests.append(request.url))


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def context(browser: Browser, ui: Ui) -> Iterator[BrowserContext]:
    made = new_context(browser, ui)
    yield made
    made.close()


@pytest.fixture
def page(context: BrowserContext, page_log: PageLog) -> Page:
    opened = context.new_page()
    watch(opened, page_log)
    return opened


def new_page(browser: Browser, ui: Ui, log: PageLog | None = None) -> Page:
    """A page in another fresh context (a second browser), closed with its context at
    the test's end by the caller: `page.context.close()`."""
    opened = new_context(browser, ui).new_page()
    if log is not None:
        watch(opened, log)
    return opened


# --- what a page loads ------------------------------------------------------------------

STATIC = REPO / "api" / "ui" / "static"
_IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^"';]*?\bfrom\s*["']([^"']+)["']"""
    r"""|^\s*import\s*["']([^"']+)["']""",
    re.M,
)


def module_graph(entry: str) -> set[str]:
    """The URL paths of an entry module (e.g. "security.js") and of everything it
    imports statically, transitively: what its first load may request besides the HTML
    and the stylesheet."""
    found: set[str] = set()
    todo = [f"/ui/static/{entry}"]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        source = (STATIC / path.removeprefix("/ui/static/")).read_text()
        for match in _IMPORT.finditer(source):
            target = match.group(1) or match.group(2)
            base = path.rsplit("/", 1)[0]
            todo.append(os.path.normpath(f"{base}/{target}"))
    return found


# --- screenshots and axe ---------------------------------------------------------------

Shoot = Callable[["Page", str], list[Path]]
Axe = Callable[["Page"], dict[str, Any]]


def take_screenshots(page: Page, name: str) -> list[Path]:
    """var/screenshots/<name>-1280.png and -390.png, the full page at each width; the
    viewport is put back afterwards."""
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name), name
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    written = []
    for width, height in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        # No page may scroll sideways at a phone's width (tables scroll in their box).
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page is {overflow}px wider than {width}px"
        path = SCREENSHOTS / f"{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        written.append(path)
    if before:
        page.set_viewport_size(before)
    return written


@pytest.fixture
def shoot() -> Shoot:
    return take_screenshots


def run_axe(page: Page) -> dict[str, Any]:
    """axe-core (shipped inside axe-playwright-python) on the page as it is now; fails on
    any serious or critical violation, naming each rule and its first nodes."""
    from axe_playwright_python.sync_playwright import (  # type: ignore[import-untyped]
        Axe as AxeRunner,
    )

    results: dict[str, Any] = AxeRunner().run(page).response
    bad = [v for v in results["violations"] if v.get("impact") in ("serious", "critical")]
    summary = [
        {
            "rule": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:5]],
        }
        for v in bad
    ]
    assert bad == [], json.dumps(summary, indent=2)
    return results


@pytest.fixture
def axe() -> Axe:
    return run_axe
