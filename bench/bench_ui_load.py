"""The pages' first load in chromium: bytes, requests and time, against a bare page.

`mfa-codes run` (the embedded default) on a free port, Debian's chromium through
Playwright (as tests/browser). For each page whose HTML exists (api/ui/html), LOADS
first loads, each in a fresh browser context (an empty cache) carrying the session
cookie of one sign-in through a ui-link: the bytes of every response (compressed on
the wire as the body came, and decoded), the requests (static files, and API calls),
and from the browser's own navigation timing the time to `domInteractive` and to
`html[data-state="ready"]` (the page's first render done), medians.

The baseline, measured in the same run against the same server: a bare HTML page
with the stylesheet and no script (the HTML 404 page under /ui), its time to
`domInteractive` and to the load event. `ready / bare load` is the ratio; the issue's
bar is the security page ready in under 500 ms on this machine.

    python -m bench.bench_ui_load        (BENCH_UI_LOADS, default 9)
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.ui import pages
from bench.common import markdown_table
from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PAGE_OF_ROLE,
    Ui,
    new_context,
)
from tests.e2e.service import running
from tests.support.processes import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser

LOADS = max(1, min(int(os.environ.get("BENCH_UI_LOADS", "9")), 50))
HTML = Path(pages.__file__).resolve().parent / "html"
ROLE_OF_PAGE = {page: role for role, page in PAGE_OF_ROLE.items()}
BARE = "/ui/bench-bare-page"  # no such page: the HTML 404 page, HTML + ui.css, no script

# When the page's script sets data-state (a mutation; the parser's "loading" is not one).
_READY_MARK = """
new MutationObserver(() => {
  const state = document.documentElement && document.documentElement.dataset.state;
  if ((state === "ready" || state === "error") && window.__readyAt === undefined) {
    window.__readyAt = performance.now();
  }
}).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-state"]});
"""
_TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const entries = [nav, ...performance.getEntriesByType("resource")];
  return {
    interactive: nav.domInteractive,
    load: nav.loadEventEnd,
    ready: window.__readyAt === undefined ? null : window.__readyAt,
    state: document.documentElement.dataset.state,
    entries: entries.map((e) => ({
      url: e.name, wire: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize,
    })),
  };
}"""


def _is_api(url: str, base: str) -> bool:
    return url.removeprefix(base).startswith(("/v1/", "/ui/session"))


def _one_load(browser: Browser, ui: Ui, path: str, cookies: list[Any]) -> dict[str, Any]:
    context = new_context(browser, ui)
    try:
        if cookies:
            context.add_cookies(cookies)
        context.add_init_script(_READY_MARK)
        page = context.new_page()
        page.goto(ui.base + path)
        if path != BARE:
            page.wait_for_selector('html[data-state="ready"]', state="attached")
        page.wait_for_function("performance.getEntriesByType('navigation')[0].loadEventEnd > 0")
        timing: dict[str, Any] = page.evaluate(_TIMING)
        return timing
    finally:
        context.close()


def _signed_in_cookies(browser: Browser, ui: Ui, path: str) -> list[Any]:
    """The session cookie of one sign-in through a fresh ui-link for the page's role."""
    role = ROLE_OF_PAGE.get(path)
    if role is None:
        return []
    org = ui.org()
    # An enrolled user (the security page's usual state); an auditor or admin is a name.
    principal = ui.user(org, enrolled=True).user_id if role == "user" else ui.fresh(role)
    context = new_context(browser, ui)
    try:
        ui.enter(context.new_page(), role, principal, org)
        return list(context.cookies())
    finally:
        context.close()


def _row(name: str, loads: list[dict[str, Any]], base: str, bare_load: float) -> dict[str, object]:
    first = loads[0]["entries"]
    static = [e for e in first if not _is_api(e["url"], base)]
    api = [e for e in first if _is_api(e["url"], base)]
    interactive = statistics.median(x["interactive"] for x in loads)
    readies = [x["ready"] for x in loads if x["ready"] is not None]
    ready = statistics.median(readies) if readies else None
    load = statistics.median(x["load"] for x in loads)
    shown = ready if ready is not None else load
    return {
        "page": name,
        "static requests": len(static),
        "API calls": len(api),
        "static bytes on the wire": sum(e["wire"] for e in static),
        "static bodies compressed": sum(e["encoded"] for e in static),
        "static bodies decoded": sum(e["decoded"] for e in static),
        "domInteractive ms": interactive,
        "ready ms (bare: load)": shown,
        "ready / bare load": shown / bare_load if bare_load else None,
        "loads": len(loads),
        "final state": loads[-1]["state"],
    }


def run() -> list[dict[str, object]]:
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"needs chromium at {CHROMIUM} (MFA_CHROMIUM)")
    present = [f"/ui/{name}" for name in pages.PAGES if (HTML / f"{name}.html").exists()]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "MFA_PUBLIC_URL": base,
        "MFA_TRUSTED_PROXIES": "127.0.0.1/32",
        "MFA_LOG_LEVEL": "WARNING",
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        running(Path(tmp), env, port=port) as svc,
        sync_playwright() as pw,
    ):
        ui = Ui(svc, base)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            cookies = {path: _signed_in_cookies(browser, ui, path) for path in present}
            samples: dict[str, list[dict[str, Any]]] = {p: [] for p in [BARE, *present]}
            # One warm-up of each (the server's first answers, chromium's first start of a
            # renderer), then the loads taking turns, so drift weighs on all alike.
            for path in samples:
                _one_load(browser, ui, path, cookies.get(path, []))
            for _ in range(LOADS):
                for path, into in samples.items():
                    into.append(_one_load(browser, ui, path, cookies.get(path, [])))
        finally:
            browser.close()
    bare_load = statistics.median(x["load"] for x in samples[BARE])
    rows = [_row("bare HTML + ui.css (baseline)", samples[BARE], base, bare_load)]
    rows += [_row(path, samples[path], base, bare_load) for path in present]
    return rows


if __name__ == "__main__":
    print(markdown_table(run()))
