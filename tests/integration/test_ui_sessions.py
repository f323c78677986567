"""Signing in a browser (issue 15, item 1): a ui-link's ticket works once for 120 s,
POST /ui/session trades it for an HttpOnly, SameSite=Strict cookie only as JSON from
our own origin, the cookie authenticates /v1 calls (state changes and the sheet only
with the page's CSRF token), a bearer header wins over it, each kind of token counts
only where it belongs, the session ends after 15 idle minutes or 8 hours and on every
revocation path, and no ticket, session or CSRF token reaches a log or the trail.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from falcon import testing
from sqlalchemy import delete, select, update

from cli.main import cli
from domain import audit, purge, ui_sessions
from domain.audit.types import EventType
from domain.clock import utcnow
from domain.errors import TicketGone
from domain.models import ApiToken, AuditEvent, RequestThrottle, UiTicket, User
from domain.notify import repudiation
from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world, world_on
from tests.support.settings import FAST_ARGON2, TEST_SECRET_KEY, make_settings
from tests.support.throttling import in_one_window

PUBLIC = "http://127.0.0.1:8000"  # make_settings' default MFA_PUBLIC_URL
OWN_ORIGIN = "http://127.0.0.1:8000"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    with world_on(request, tmp_path_factory, "ui_sessions") as built:
        yield built


@pytest.fixture(autouse=True)
def fresh_source(request: pytest.FixtureRequest) -> None:
    """Every request here comes from 127.0.0.1, which gets 10 POST /ui/session a
    minute: each test starts that count afresh (the limit has its own test)."""
    if "world" not in request.fixturenames:
        return
    world: ApiWorld = request.getfixturevalue("world")
    with world.services.unit_of_work() as uow:
        uow.session.execute(delete(RequestThrottle).where(RequestThrottle.key.like("ui-session:%")))


@dataclass
class Browser:
    """What a page holds after POST /ui/session: the cookie and its CSRF token."""

    world: ApiWorld
    cookie_name: str
    session_token: str
    csrf: str
    body: dict[str, object]

    def call(
        self,
        method: str,
        path: str,
        *,
        csrf: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        json: object = None,
    ) -> testing.Result:
        sent = {"Cookie": f"{self.cookie_name}={self.session_token}", **(headers or {})}
        if csrf is not None:
            sent["X-CSRF-Token"] = csrf
        return self.world.call(method, path, token, json=json, headers=sent)

    def token_id(self) -> str:
        with self.world.services.unit_of_work() as uow:
            row = uow.session.execute(
                select(ApiToken).where(ApiToken.token_hash == _sha(self.session_token))
            ).scalar_one()
            return row.id


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ticket_of(url: str) -> str:
    base, _, ticket = url.partition("#ticket=")
    assert base.endswith("/ui/enter") and ticket
    return ticket


def person(world: ApiWorld, user: str = "alice") -> tuple[str, str]:
    """(org, service token) with `user` provisioned."""
    org = world.org()
    world.user(org, user)
    return org, world.token(org, "front-end", "service")


def ui_link(world: ApiWorld, service: str, user: str = "alice") -> str:
    got = world.call("POST", f"/v1/users/{user}/ui-links", service, json={"page": "security"})
    assert got.status_code == 201, got.text
    return ticket_of(got.json["url"])


def ticket(world: ApiWorld, org: str, principal: str, role: str, **ago: float) -> str:
    """A ticket made through the domain, `ago` (seconds=...) in the past: the clock."""
    with world.services.unit_of_work() as uow:
        made, _ = ui_sessions.issue_ticket(
            uow, org, principal, role, utcnow() - timedelta(**ago), audit.CLI
        )
    return made


def enter(
    world: ApiWorld,
    ticket_: str,
    headers: dict[str, str] | None = None,
    body: object = None,
    source: str | None = None,
) -> testing.Result:
    sent = {**JSON, **(headers or {})}
    payload = json.dumps({"ticket": ticket_} if body is None else body)
    return world.call("POST", "/ui/session", body=payload, headers=sent, remote_addr=source)


def signed_in(world: ApiWorld, ticket_: str) -> Browser:
    got = enter(world, ticket_)
    assert got.status_code == 200, got.text
    name = ui_sessions_cookie(world)
    return Browser(world, name, got.cookies[name].value, got.json["csrf_token"], got.json)


def ui_sessions_cookie(world: ApiWorld) -> str:
    https = world.settings.public_url.startswith("https://")
    return "__Host-mfa_session" if https else "mfa_session"


def session_row(world: ApiWorld, browser: Browser) -> ApiToken:
    with world.services.unit_of_work() as uow:
        row = uow.session.get(ApiToken, browser.token_id())
        assert row is not None
        uow.session.expunge(row)
        return row


def assert_401(got: testing.Result) -> None:
    assert got.status_code == 401, got.text
    assert got.json["type"] == "/problems/unauthenticated"


def assert_csrf_failed(got: testing.Result) -> None:
    assert got.status_code == 403, got.text
    assert got.json["type"] == "/problems/csrf-failed"


# --- links -----------------------------------------------------------------------------


def test_a_service_gets_a_one_time_link_whose_ticket_is_stored_only_as_a_hash(
    world: ApiWorld,
) -> None:
    org, service = person(world)
    before = utcnow()
    got = world.call("POST", "/v1/users/alice/ui-links", service, json={"page": "security"})
    assert got.status_code == 201, got.text
    assert got.headers["cache-control"] == "no-store"
    assert set(got.json) == {"url", "expires_at"}
    assert got.json["url"].startswith(f"{PUBLIC}/ui/enter#ticket=")
    made = ticket_of(got.json["url"])
    assert len(made) >= 43  # 256 bits in url-safe base64 (the brief asks for >= 128)
    with world.services.unit_of_work() as uow:
        row = uow.session.execute(select(UiTicket).where(UiTicket.org_id == org)).scalar_one()
        assert row.ticket_hash == _sha(made) and made not in row.ticket_hash
        assert (row.principal_id, row.role, row.used_at) == ("alice", "user", None)
        assert row.expires_at - row.created_at == timedelta(seconds=120)
        assert row.created_at >= before - timedelta(seconds=1)


@pytest.mark.parametrize(
    "body", [{"page": "audit"}, {"page": "admin"}, {"page": "Security"}, {}, {"page": 1}]
)
def test_a_service_link_opens_the_users_page_only(world: ApiWorld, body: object) -> None:
    org, service = person(world)
    got = world.call("POST", "/v1/users/alice/ui-links", service, json=body)
    assert got.status_code == 422, got.text
    assert got.json["field"] == "page"
    with world.services.unit_of_work() as uow:
        assert uow.session.execute(select(UiTicket).where(UiTicket.org_id == org)).first() is None


def test_a_link_for_an_unknown_user_is_404_and_other_roles_are_403(world: ApiWorld) -> None:
    org, service = person(world)
    got = world.call("POST", "/v1/users/nobody/ui-links", service, json={"page": "security"})
    assert got.status_code == 404 and got.json["type"] == "/problems/not-found"
    for role in ("user", "admin", "auditor"):
        tok = world.token(org, "alice" if role == "user" else role, role)
        refused = world.call("POST", "/v1/users/alice/ui-links", tok, json={"page": "security"})
        assert refused.status_code == 403, (role, refused.text)


def test_the_cli_prints_only_the_link_of_each_roles_page(tmp_path: Path) -> None:
    env = {
        "MFA_VAR_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "MFA_SECRET_KEY": TEST_SECRET_KEY,
        "MFA_PUBLIC_URL": "https://mfa.example/",
        **FAST_ARGON2,
    }
    runner = CliRunner()
    for args in (["db", "upgrade"], ["org", "create", "acme"], ["user", "create", "acme", "al"]):
        assert runner.invoke(cli, args, env=env).exit_code == 0
    settings = make_settings(tmp_path, MFA_DATABASE_URL=env["MFA_DATABASE_URL"])
    with api_world(settings, worker=False) as world:
        for role, principal, page in (
            ("user", "al", "/ui/security"),
            ("auditor", "sec-team", "/ui/audit"),
            ("admin", "ops", "/ui/admin"),
        ):
            done = runner.invoke(cli, ["ui-link", "acme", principal, "--role", role], env=env)
            assert done.exit_code == 0, done.output
            (line,) = done.stdout.splitlines()
            assert line.startswith("https://mfa.example/ui/enter#ticket=")
            got = enter(world, ticket_of(line))
            assert got.status_code == 200, got.text
            assert (got.json["role"], got.json["page"]) == (role, page)
            assert got.json["principal_id"] == principal
        refused = runner.invoke(cli, ["ui-link", "acme", "svc", "--role", "service"], env=env)
        assert refused.exit_code != 0
        unknown = runner.invoke(cli, ["ui-link", "acme", "nobody", "--role", "user"], env=env)
        assert unknown.exit_code == 1 and "https://" not in unknown.stdout


# --- POST and GET /ui/session ------------------------------------------------------------


def test_a_ticket_opens_a_session_with_a_strict_http_only_cookie(world: ApiWorld) -> None:
    org, service = person(world)
    got = enter(world, ui_link(world, service), headers={"Origin": OWN_ORIGIN})
    assert got.status_code == 200, got.text
    assert got.headers["cache-control"] == "no-store"
    body = got.json
    assert set(body) == {
        "csrf_token",
        "role",
        "page",
        "expires_at",
        "principal_id",
        "org_id",
        "org_name",
    }
    assert (body["role"], body["page"], body["principal_id"]) == ("user", "/ui/security", "alice")
    assert body["org_id"] == org == body["org_name"]
    (raw,) = [v for k, v in got.headers.items() if k.lower() == "set-cookie"]
    cookie = got.cookies["mfa_session"]
    assert cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/"
    assert not cookie.secure and "Secure" not in raw and "Domain" not in raw
    assert cookie.max_age == 8 * 3600
    assert cookie.value != body["csrf_token"]


def test_the_session_is_a_token_row_of_kind_session_for_8_hours(world: ApiWorld) -> None:
    org, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    row = session_row(world, browser)
    assert (row.kind, row.role, row.principal_id, row.org_id) == ("session", "user", "alice", org)
    assert row.expires_at is not None and row.expires_at - row.created_at == timedelta(hours=8)
    admin = world.token(org, "help-desk", "admin")
    listed = world.call("GET", "/v1/org/tokens?role=user", admin).json["tokens"]
    assert [(t["token_id"], t["kind"]) for t in listed] == [(row.id, "session")]


def test_get_ui_session_gives_a_reloaded_page_the_same_body(world: ApiWorld) -> None:
    _, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    again = browser.call("GET", "/ui/session")
    assert again.status_code == 200, again.text
    assert again.json == browser.body
    assert again.headers["cache-control"] == "no-store"
    assert_401(world.call("GET", "/ui/session"))
    # The bearer header is no way into GET /ui/session.
    bearer = world.token(world.org(), "x", "admin")
    assert_401(world.call("GET", "/ui/session", bearer))


def test_a_ticket_works_once(world: ApiWorld) -> None:
    _, service = person(world)
    made = ui_link(world, service)
    assert enter(world, made).status_code == 200
    again = enter(world, made)
    assert again.status_code == 410 and again.json["type"] == "/problems/ticket-gone"
    assert "set-cookie" not in {k.lower() for k in again.headers}
    for unknown in ("not-a-ticket", "x" * 200, ""):
        assert enter(world, unknown).status_code == 410


def race_posts(world: ApiWorld, made: str, racers: int) -> list[int]:
    """The statuses of `racers` POST /ui/session of one ticket, released together."""
    barrier = threading.Barrier(racers)
    statuses: list[int] = []

    def post() -> None:
        barrier.wait(timeout=10)
        statuses.append(enter(world, made).status_code)

    threads = [threading.Thread(target=post) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return statuses


def test_of_two_concurrent_posts_of_one_ticket_exactly_one_opens_a_session(
    world: ApiWorld,
) -> None:
    org, _ = person(world)
    rounds = 4  # each a fresh ticket and a fresh race
    for _ in range(rounds):
        made = ticket(world, org, "alice", "user", seconds=0)
        assert sorted(race_posts(world, made, 2)) == [200, 410]
    with world.services.unit_of_work() as uow:
        opened = uow.session.execute(
            select(ApiToken).where(ApiToken.org_id == org, ApiToken.kind == "session")
        ).all()
    assert len(opened) == rounds


def test_of_concurrent_redeems_of_one_ticket_exactly_one_wins(world: ApiWorld) -> None:
    org, _ = person(world)
    made = ticket(world, org, "alice", "user", seconds=0)
    racers = 6
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def redeem() -> None:
        barrier.wait(timeout=10)
        try:
            with world.services.unit_of_work() as uow:
                ui_sessions.redeem(uow, made, audit.Context(source_ip="127.0.0.1"), utcnow())
            outcome = "won"
        except TicketGone:
            outcome = "gone"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=redeem) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["gone"] * (racers - 1) + ["won"]
    with world.services.unit_of_work() as uow:
        sessions = uow.session.execute(
            select(ApiToken).where(ApiToken.org_id == org, ApiToken.kind == "session")
        ).all()
    assert len(sessions) == 1


def test_a_ticket_expires_at_120_seconds(world: ApiWorld) -> None:
    org, _ = person(world)
    assert enter(world, ticket(world, org, "alice", "user", seconds=119)).status_code == 200
    late = enter(world, ticket(world, org, "alice", "user", seconds=121))
    assert late.status_code == 410 and late.json["type"] == "/problems/ticket-gone"


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1:8001", "https://127.0.0.1:8000"]
)
def test_a_foreign_origin_is_refused_and_the_ticket_survives(world: ApiWorld, origin: str) -> None:
    org, _ = person(world)
    made = ticket(world, org, "alice", "user", seconds=0)
    refused = enter(world, made, headers={"Origin": origin})
    assert refused.status_code == 403 and refused.json["type"] == "/problems/forbidden"
    assert "set-cookie" not in {k.lower() for k in refused.headers}
    assert enter(world, made, headers={"Origin": OWN_ORIGIN}).status_code == 200


@pytest.mark.parametrize("site", ["cross-site", "same-site", "none"])
def test_a_browser_saying_the_call_is_not_from_our_origin_is_refused(
    world: ApiWorld, site: str
) -> None:
    org, _ = person(world)
    made = ticket(world, org, "alice", "user", seconds=0)
    refused = enter(world, made, headers={"Sec-Fetch-Site": site})
    assert refused.status_code == 403 and refused.json["type"] == "/problems/forbidden"
    assert enter(world, made, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_only_json_opens_a_session(world: ApiWorld, content_type: str | None) -> None:
    """A cross-site form can send the first three without a preflight: login CSRF."""
    org, _ = person(world)
    made = ticket(world, org, "alice", "user", seconds=0)
    headers = {} if content_type is None else {"Content-Type": content_type}
    got = world.call("POST", "/ui/session", body=json.dumps({"ticket": made}), headers=headers)
    assert got.status_code == 415, got.text
    assert got.json["type"] == "/problems/unsupported-media-type"
    assert enter(world, made).status_code == 200  # not spent by the refusal


def test_a_malformed_body_is_400_or_422(world: ApiWorld) -> None:
    bad = world.call("POST", "/ui/session", body="{not json", headers=JSON)
    assert bad.status_code == 400 and bad.json["type"] == "/problems/invalid-request"
    for body in ({}, {"ticket": 1}, {"ticket": "x", "more": 1}, ["x"]):
        got = enter(world, "", body=body)
        assert got.status_code == 422, (body, got.text)


def test_a_source_gets_ten_session_posts_a_minute(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as world:

        def run(source: str) -> list[int]:
            return [enter(world, f"guess-{n}", source=source).status_code for n in range(12)]

        answers = in_one_window(run)
    assert answers == [410] * 10 + [429, 429]


# --- the cookie on /v1 -------------------------------------------------------------------


def test_the_cookie_reads_without_csrf_and_changes_state_only_with_it(world: ApiWorld) -> None:
    org, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    assert browser.call("GET", "/v1/me/mfa").status_code == 200
    assert_csrf_failed(browser.call("POST", "/v1/me/mfa/enrollment"))
    assert_csrf_failed(browser.call("POST", "/v1/me/mfa/enrollment", csrf="wrong"))
    assert_csrf_failed(browser.call("DELETE", "/v1/me/token", csrf=""))
    other = signed_in(world, ui_link(world, service))
    assert_csrf_failed(browser.call("DELETE", "/v1/me/token", csrf=other.csrf))
    started = browser.call("POST", "/v1/me/mfa/enrollment", csrf=browser.csrf)
    assert started.status_code == 201, started.text
    with world.services.unit_of_work() as uow:
        denied = (
            uow.session.execute(
                select(AuditEvent).where(
                    AuditEvent.org_id == org, AuditEvent.type == EventType.ACCESS_DENIED
                )
            )
            .scalars()
            .all()
        )
    assert [e.details["reason"] for e in denied] == ["csrf"] * 4
    assert {e.details["route"] for e in denied} == {"/v1/me/mfa/enrollment", "/v1/me/token"}


def test_a_cookie_fetch_of_a_sheet_needs_the_csrf_token(world: ApiWorld) -> None:
    _, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    sheet = "/v1/me/backup-codes/regenerations/00000000-0000-0000-0000-000000000000/sheet"
    assert_csrf_failed(browser.call("GET", sheet))
    assert browser.call("GET", sheet, csrf=browser.csrf).status_code == 404
    # Another GET is not a sheet: no token needed.
    assert browser.call("GET", sheet.removesuffix("/sheet")).status_code == 404


def test_signing_out_with_the_cookie_revokes_the_session_and_clears_it(world: ApiWorld) -> None:
    _, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    out = browser.call("DELETE", "/v1/me/token", csrf=browser.csrf)
    assert out.status_code == 204, out.text
    (raw,) = [v for k, v in out.headers.items() if k.lower() == "set-cookie"]
    assert raw.startswith('mfa_session="";') or raw.startswith("mfa_session=;")
    assert "Max-Age=0" in raw and "HttpOnly" in raw and "Path=/" in raw
    assert_401(browser.call("GET", "/v1/me/mfa"))
    assert_401(browser.call("GET", "/ui/session"))


def test_the_bearer_header_wins_over_the_cookie(world: ApiWorld) -> None:
    org, service = person(world)
    world.user(org, "bob")
    browser = signed_in(world, ui_link(world, service))
    bob = world.token(org, "bob", "user")
    # Bob's bearer token acts, not Alice's session, and needs no CSRF token.
    assert browser.call("DELETE", "/v1/me/token", token=bob).status_code == 204
    assert_401(world.call("GET", "/v1/me/mfa", bob))
    assert browser.call("GET", "/v1/me/mfa").status_code == 200
    # A bad header is not rescued by a good cookie.
    assert_401(browser.call("GET", "/v1/me/mfa", token="mfa_not-a-token"))


def test_a_session_token_counts_only_as_the_cookie_and_a_bearer_only_as_the_header(
    world: ApiWorld,
) -> None:
    org, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    assert_401(world.call("GET", "/v1/me/mfa", browser.session_token))
    bearer = world.token(org, "alice", "user")
    planted = Browser(world, "mfa_session", bearer, "", {})
    assert_401(planted.call("GET", "/v1/me/mfa"))
    assert_401(planted.call("GET", "/ui/session"))
    assert world.call("GET", "/v1/me/mfa", bearer).status_code == 200


def test_two_session_cookies_open_nothing(world: ApiWorld) -> None:
    """A second cookie of the name was planted (cookie tossing): neither counts."""
    _, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    other = signed_in(world, ui_link(world, service))
    both = f"mfa_session={browser.session_token}; mfa_session={other.session_token}"
    assert_401(world.call("GET", "/v1/me/mfa", headers={"Cookie": both}))


# --- how a session ends --------------------------------------------------------------------


def _age(world: ApiWorld, browser: Browser, **values: object) -> None:
    with world.services.unit_of_work() as uow:
        uow.session.execute(
            update(ApiToken).where(ApiToken.id == browser.token_id()).values(**values)
        )


def test_a_session_ends_after_15_idle_minutes(world: ApiWorld) -> None:
    _, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    now = utcnow()
    _age(
        world,
        browser,
        created_at=now - timedelta(hours=1),
        last_used_at=now - timedelta(minutes=14),
    )
    assert browser.call("GET", "/v1/me/mfa").status_code == 200  # used: last_used_at now
    used = session_row(world, browser).last_used_at
    assert used is not None and used >= now
    _age(world, browser, last_used_at=now - timedelta(minutes=15, seconds=1))
    assert_401(browser.call("GET", "/v1/me/mfa"))
    assert_401(browser.call("GET", "/ui/session"))
    never_used = signed_in(world, ui_link(world, service))
    _age(world, never_used, created_at=now - timedelta(minutes=16), last_used_at=None)
    assert_401(never_used.call("GET", "/v1/me/mfa"))
    org = str(browser.body["org_id"])
    admin = world.token(org, "help-desk", "admin")
    live = world.call("GET", "/v1/org/tokens?include_revoked=false&role=user", admin)
    assert live.status_code == 200 and live.json["tokens"] == []  # idle sessions are over
    listed = world.call("GET", "/v1/org/tokens?role=user", admin).json["tokens"]
    assert {t["token_id"] for t in listed} == {browser.token_id(), never_used.token_id()}


def test_a_session_ends_after_8_hours_however_busy(world: ApiWorld) -> None:
    _, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    now = utcnow()
    _age(world, browser, created_at=now - timedelta(hours=8), expires_at=now, last_used_at=now)
    assert_401(browser.call("GET", "/v1/me/mfa"))


def test_an_administrators_revoke_ends_the_session(world: ApiWorld) -> None:
    org, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    admin = world.token(org, "help-desk", "admin")
    assert world.call("DELETE", f"/v1/org/tokens/{browser.token_id()}", admin).status_code == 204
    assert_401(browser.call("GET", "/v1/me/mfa"))


def test_an_mfa_reset_ends_the_session_and_the_unused_links(world: ApiWorld) -> None:
    org, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    pending = ui_link(world, service)
    admin = world.token(org, "help-desk", "admin")
    assert world.call("DELETE", "/v1/users/alice/mfa", admin).status_code == 204
    assert_401(browser.call("GET", "/v1/me/mfa"))
    assert enter(world, pending).status_code == 410


def test_deleting_the_user_ends_the_session_and_removes_the_links(world: ApiWorld) -> None:
    org, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    pending = ui_link(world, service)
    admin = world.token(org, "help-desk", "admin")
    assert world.call("DELETE", "/v1/users/alice", admin).status_code == 204
    assert_401(browser.call("GET", "/v1/me/mfa"))
    assert_401(browser.call("GET", "/ui/session"))
    with world.services.unit_of_work() as uow:
        assert uow.session.execute(select(UiTicket).where(UiTicket.org_id == org)).first() is None
    assert enter(world, pending).status_code == 410


def test_a_repudiation_ends_the_session(world: ApiWorld) -> None:
    org, service = person(world)
    browser = signed_in(world, ui_link(world, service))
    with world.services.unit_of_work() as uow:
        user = uow.session.execute(
            select(User).where(User.org_id == org, User.external_id == "alice")
        ).scalar_one()
        made = repudiation.issue(uow, user, "event-1", utcnow())
    done = world.call("POST", f"/v1/repudiations/{made}", headers={"Accept": "application/json"})
    assert done.status_code == 204, done.text
    assert_401(browser.call("GET", "/v1/me/mfa"))


def test_the_purge_deletes_expired_tickets_only(world: ApiWorld) -> None:
    org, _ = person(world)
    dead = ticket(world, org, "alice", "user", seconds=200)
    live = ticket(world, org, "alice", "user", seconds=0)
    with world.services.unit_of_work() as uow:
        assert purge.purge_expired_ui_tickets(uow.session, utcnow()) >= 1
        left = set(
            uow.session.execute(
                select(UiTicket.ticket_hash).where(UiTicket.org_id == org)
            ).scalars()
        )
    assert left == {_sha(live)} and _sha(dead) not in left


# --- the trail and the logs ------------------------------------------------------------------


def test_a_session_is_audited_as_token_issued_and_no_secret_reaches_logs_or_trail(
    world: ApiWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    org, service = person(world)
    made = ui_link(world, service)
    browser = signed_in(world, made)
    browser.call("POST", "/v1/me/mfa/enrollment")  # 403 csrf-failed, audited
    browser.call("GET", "/ui/session")
    browser.call("DELETE", "/v1/me/token", csrf=browser.csrf)
    enter(world, made)  # 410
    with world.services.unit_of_work() as uow:
        events = list(
            uow.session.execute(
                select(AuditEvent).where(AuditEvent.org_id == org).order_by(AuditEvent.seq)
            ).scalars()
        )
    issued = [
        e for e in events if e.type == EventType.TOKEN_ISSUED and e.details["kind"] == "session"
    ]
    (event,) = issued
    assert event.details["role"] == "user" and event.details["principal_id"] == "alice"
    assert event.details["ttl_seconds"] == 8 * 3600
    assert event.actor_principal_id == "alice" and event.user_id == "alice"
    # The link itself, in the name of the service that asked for it: who could open
    # a session for whom.
    (link_event,) = [
        e for e in events if e.type == EventType.TOKEN_ISSUED and e.details["kind"] == "ui-link"
    ]
    assert link_event.seq < event.seq
    assert (link_event.actor_principal_id, link_event.actor_role) == ("front-end", "service")
    assert link_event.details["principal_id"] == "alice" and link_event.user_id == "alice"
    assert link_event.details["role"] == "user"
    trail = json.dumps(
        [{c.name: str(getattr(e, c.name)) for c in AuditEvent.__table__.columns} for e in events]
    )
    logged = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    for secret in (made, browser.session_token, browser.csrf):
        assert secret not in trail
        assert secret not in logged


# --- behind HTTPS ------------------------------------------------------------------------------


@pytest.fixture
def https_world(tmp_path: Path) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path, MFA_PUBLIC_URL="https://mfa.example")
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as built:
        yield built


def test_behind_https_the_cookie_is_host_prefixed_and_secure(https_world: ApiWorld) -> None:
    world = https_world
    _, service = person(world)
    got = world.call("POST", "/v1/users/alice/ui-links", service, json={"page": "security"})
    assert got.json["url"].startswith("https://mfa.example/ui/enter#ticket=")
    made = ticket_of(got.json["url"])
    assert enter(world, made, headers={"Origin": "http://mfa.example"}).status_code == 403
    opened = enter(world, made, headers={"Origin": "https://mfa.example"})
    assert opened.status_code == 200, opened.text
    (raw,) = [v for k, v in opened.headers.items() if k.lower() == "set-cookie"]
    assert raw.startswith("__Host-mfa_session=") and "Domain" not in raw
    cookie = opened.cookies["__Host-mfa_session"]
    assert cookie.secure and cookie.http_only and cookie.same_site == "Strict"
    assert cookie.path == "/"
    browser = Browser(world, "__Host-mfa_session", cookie.value, opened.json["csrf_token"], {})
    assert browser.call("GET", "/v1/me/mfa").status_code == 200
    # The unprefixed name is not read behind HTTPS (it could come from plain http).
    plain = Browser(world, "mfa_session", cookie.value, opened.json["csrf_token"], {})
    assert_401(plain.call("GET", "/v1/me/mfa"))
    out = browser.call("DELETE", "/v1/me/token", csrf=browser.csrf)
    (cleared,) = [v for k, v in out.headers.items() if k.lower() == "set-cookie"]
    assert cleared.startswith("__Host-mfa_session=") and "Max-Age=0" in cleared
    assert "Secure" in cleared
