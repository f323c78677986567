"""A browser's sign-in against `mfa-codes run` over real HTTP: the CLI's ui-link,
POST /ui/session's Set-Cookie as the server sends it, the cookie on /v1 (a state
change only with the CSRF token), sign-out clearing it; and the service's own
output (its access log included) never holds the ticket, the cookie or the CSRF
token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from tests.e2e.service import Response, running

pytestmark = pytest.mark.slow


def _send(
    base: str, method: str, path: str, headers: dict[str, str], body: object = None
) -> Response:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Response(err.code, err.headers, err.read())


def test_a_ui_link_signs_a_browser_in_and_out_over_real_http(tmp_path: Path) -> None:
    with running(tmp_path) as svc:
        svc.cli("org", "create", "acme")
        svc.cli("user", "create", "acme", "alice")
        (url,) = svc.cli("ui-link", "acme", "alice", "--role", "user").splitlines()
        assert "/ui/enter#ticket=" in url
        ticket = url.partition("#ticket=")[2]

        entered = _send(
            svc.base,
            "POST",
            "/ui/session",
            {"Content-Type": "application/json"},
            {"ticket": ticket},
        )
        assert entered.status == 200, entered.body
        (raw,) = entered.headers.get_all("Set-Cookie") or []
        assert "HttpOnly" in raw and "SameSite=Strict" in raw and "Path=/" in raw
        cookie = SimpleCookie(raw)["mfa_session"].value
        csrf = entered.json()["csrf_token"]
        jar = {"Cookie": f"mfa_session={cookie}"}

        assert _send(svc.base, "GET", "/v1/me/mfa", jar).status == 200
        refused = _send(svc.base, "POST", "/v1/me/mfa/enrollment", jar)
        assert refused.status == 403 and refused.json()["type"] == "/problems/csrf-failed"
        out = _send(svc.base, "DELETE", "/v1/me/token", {**jar, "X-CSRF-Token": csrf})
        assert out.status == 204
        assert "Max-Age=0" in out.headers["Set-Cookie"]
        assert _send(svc.base, "GET", "/ui/session", jar).status == 401
        again = _send(
            svc.base,
            "POST",
            "/ui/session",
            {"Content-Type": "application/json"},
            {"ticket": ticket},
        )
        assert again.status == 410

    written = svc.log.read_text(errors="replace")
    assert "/ui/session" in written  # the access log is in there
    for secret in (ticket, cookie, csrf):
        assert secret not in written
