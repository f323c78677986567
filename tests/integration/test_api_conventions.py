"""docs/api.md's conventions over HTTP: problem+json for every error, bearer auth,
X-Request-Id, strict bodies with the 64 KiB limit, health and readiness.

The real app on embedded SQLite, without a worker (nothing here needs one).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from sqlalchemy import select

from api.app import create_app
from domain.audit.checkpoints import checkpoint_org
from domain.models import AuditEvent
from infra.migrate import upgrade
from infra.services import Services
from tests.support.api_world import ApiWorld, api_world
from tests.support.settings import make_settings, pg_amqp_settings
from workers.app import make_celery
from workers.publish import Publisher

LIMIT = 64 * 1024
REGENERATIONS = "/v1/me/backup-codes/regenerations"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
SLUG = re.compile(r"^/problems/[a-z0-9-]+$")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path_factory.mktemp("conventions"))
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as built:
        yield built


@dataclass(frozen=True)
class People:
    org: str
    user: str  # a user token; the user has not enrolled
    auditor: str
    admin: str


@pytest.fixture(scope="module")
def people(world: ApiWorld) -> People:
    org = world.org()
    world.user(org)
    return People(
        org,
        world.token(org, "alice", "user"),
        world.token(org, "security", "auditor"),
        world.token(org, "root", "admin"),
    )


# --- helpers ---------------------------------------------------------------------------


def assert_problem(result: testing.Result, status: int, slug: str | None = None) -> dict[str, Any]:
    assert result.status_code == status, result.text
    assert result.headers["Content-Type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = result.json
    assert SLUG.match(body["type"]), body
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert result.headers.get("X-Request-Id")
    assert result.headers.get("Cache-Control") == "no-store"
    return body


def wsgi_call(
    world: ApiWorld,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    chunked: bool = False,
    terminated: bool = True,
    content_length: str | None = None,
) -> testing.Result:
    """Straight to the WSGI app, for what the test client will not send: a chunked
    body (no Content-Length; the server de-chunks it) or a malformed Content-Length."""
    env = testing.create_environ(method=method, path=path, body=body, headers=headers)
    if chunked:
        env.pop("CONTENT_LENGTH", None)
        env["HTTP_TRANSFER_ENCODING"] = "chunked"
        env["wsgi.input_terminated"] = terminated
    if content_length is not None:
        env["CONTENT_LENGTH"] = content_length
    start = testing.StartResponseMock()
    iterable = world.client.app(env, start)
    return testing.Result(iterable, start.status, start.headers)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def audit_events(world: ApiWorld, auditor: str, request_id: str) -> list[dict[str, Any]]:
    got = world.call("GET", "/v1/audit/events", auditor, params={"request_id": request_id})
    assert got.status_code == 200, got.text
    return list(got.json["events"])


# --- problem documents -------------------------------------------------------------------

Case = Callable[[ApiWorld, People], testing.Result]
JSON = {"Content-Type": "application/json"}

ERRORS: list[tuple[str, Case, int, str]] = [
    ("no token", lambda w, p: w.call("GET", "/v1/me/mfa"), 401, "unauthenticated"),
    ("wrong role", lambda w, p: w.call("GET", "/v1/me/mfa", p.auditor), 403, "forbidden"),
    ("unknown route", lambda w, p: w.call("GET", "/v1/nothing-here", p.user), 404, "not-found"),
    ("unknown root route", lambda w, p: w.call("GET", "/favicon.ico"), 404, "not-found"),
    (
        "wrong method",
        lambda w, p: w.call("DELETE", "/v1/me/mfa", p.user),
        405,
        "method-not-allowed",
    ),
    (
        "bad json",
        lambda w, p: w.call("POST", REGENERATIONS, p.user, body='{"totp": ', headers=JSON),
        400,
        "invalid-request",
    ),
    (
        "not an object",
        lambda w, p: w.call("POST", REGENERATIONS, p.user, json=["123456"]),
        422,
        "invalid-request",
    ),
    (
        "bad field",
        lambda w, p: w.call("POST", REGENERATIONS, p.user, json={"totp": "1"}),
        422,
        "invalid-request",
    ),
    (
        "oversize",
        lambda w, p: w.call("POST", REGENERATIONS, p.user, body=b" " * (LIMIT + 1), headers=JSON),
        413,
        "payload-too-large",
    ),
    (
        "domain conflict",
        lambda w, p: w.call("POST", REGENERATIONS, p.user, json={"totp": "123456"}),
        409,
        "mfa-not-enrolled",
    ),
    (
        "unknown regeneration",
        lambda w, p: w.call("GET", f"{REGENERATIONS}/00000000-0000-4000-8000-000000000000", p.user),
        404,
        "not-found",
    ),
    (
        "admin: unknown user",
        lambda w, p: w.call("DELETE", "/v1/users/nobody/mfa", p.admin),
        404,
        "not-found",
    ),
]


@pytest.mark.parametrize(
    ("call", "status", "slug"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_every_error_is_a_problem_document(
    world: ApiWorld, people: People, call: Case, status: int, slug: str
) -> None:
    assert_problem(call(world, people), status, slug)


def test_wrong_method_names_the_allowed_ones(world: ApiWorld, people: People) -> None:
    got = world.call("PUT", REGENERATIONS, people.user, json={})
    assert_problem(got, 405, "method-not-allowed")
    assert "POST" in got.headers["Allow"]


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-token-we-issued",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer",
        "Bearer    ",
        "Token abc",
        "Bearer \u00e9\u00e8",
    ],
    ids=["missing", "unknown", "basic", "empty", "blank", "other-scheme", "latin-1"],
)
def test_no_or_bad_token_is_401_with_www_authenticate(
    world: ApiWorld, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    got = world.call("GET", "/v1/me/mfa", headers=headers)
    assert_problem(got, 401, "unauthenticated")
    assert got.headers["WWW-Authenticate"].startswith("Bearer")


def test_scheme_is_case_insensitive(world: ApiWorld, people: People) -> None:
    got = world.call("GET", "/v1/me/mfa", headers={"Authorization": f"bearer {people.user}"})
    assert got.status_code == 200, got.text


# --- X-Request-Id ------------------------------------------------------------------------------


def test_request_id_is_echoed(world: ApiWorld, people: People) -> None:
    for path, token in (("/healthz", None), ("/v1/me/mfa", people.user), ("/nope", None)):
        got = world.call("GET", path, token, headers={"X-Request-Id": "client-7.a:b_c"})
        assert got.headers["X-Request-Id"] == "client-7.a:b_c", path


def test_request_id_is_generated_when_absent(world: ApiWorld) -> None:
    ids = [world.call("GET", "/healthz").headers["X-Request-Id"] for _ in range(2)]
    assert all(GENERATED_ID.match(i) for i in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    "offered",
    ["has space", "x" * 129, "<script>", "new\tline", "caf\u00e9"],
    ids=["space", "too-long", "markup", "control", "latin-1"],
)
def test_invalid_request_id_is_replaced(world: ApiWorld, offered: str) -> None:
    got = world.call("GET", "/healthz", headers={"X-Request-Id": offered})
    assert GENERATED_ID.match(got.headers["X-Request-Id"])


@pytest.mark.parametrize("offered", ["trace-42", None, "not valid!"], ids=["sent", "none", "bad"])
def test_request_id_is_recorded_in_the_requests_audit_events(
    world: ApiWorld, people: People, offered: str | None
) -> None:
    # A fresh id per run: the module's database is shared.
    sent = None if offered is None else f"{offered}-{time.monotonic_ns()}"
    user = world.user(people.org, f"u{time.monotonic_ns()}")
    token = world.token(people.org, user, "user")
    headers = {} if sent is None else {"X-Request-Id": sent}
    got = world.call("POST", "/v1/me/mfa/enrollment", token, headers=headers)
    assert got.status_code == 201, got.text
    rid = got.headers["X-Request-Id"]
    assert (rid == sent) if offered == "trace-42" else GENERATED_ID.match(rid)
    events = audit_events(world, people.auditor, rid)
    assert [(e["type"], e["user_id"]) for e in events] == [("mfa.enrollment.started", user)]
    assert events[0]["request_id"] == rid


def test_request_id_is_recorded_for_refusals_too(world: ApiWorld, people: People) -> None:
    rid = f"refused-{time.monotonic_ns()}"
    got = world.call(
        "POST", REGENERATIONS, people.user, json={"totp": "123456"}, headers={"X-Request-Id": rid}
    )
    assert_problem(got, 409, "mfa-not-enrolled")
    assert got.headers["X-Request-Id"] == rid
    events = audit_events(world, people.auditor, rid)
    assert [e["type"] for e in events] == ["backup_codes.regeneration.refused"]


# --- bodies -------------------------------------------------------------------------------------


def padded(body: bytes, size: int) -> bytes:
    """The JSON `body` padded with whitespace (still valid JSON) to `size` bytes."""
    return body + b" " * (size - len(body))


def test_a_body_of_exactly_64_kib_is_read(world: ApiWorld, people: People) -> None:
    body = padded(b'{"totp": "123456"}', LIMIT)
    got = world.call("POST", REGENERATIONS, people.user, body=body, headers=JSON)
    assert_problem(got, 409, "mfa-not-enrolled")  # read and judged, not refused


def test_a_declared_length_over_64_kib_is_refused_unread(world: ApiWorld, people: People) -> None:
    got = wsgi_call(
        world,
        "POST",
        REGENERATIONS,
        b"{}",
        {**JSON, "Authorization": f"Bearer {people.user}"},
        content_length=str(10**9),
    )
    assert_problem(got, 413, "payload-too-large")


def test_a_chunked_body_over_64_kib_is_refused(world: ApiWorld, people: People) -> None:
    body = padded(b'{"totp": "123456"}', LIMIT + 1)
    headers = {**JSON, "Authorization": f"Bearer {people.user}"}
    got = wsgi_call(world, "POST", REGENERATIONS, body, headers, chunked=True)
    assert_problem(got, 413, "payload-too-large")


def test_a_chunked_body_within_the_limit_is_read(world: ApiWorld, people: People) -> None:
    headers = {**JSON, "Authorization": f"Bearer {people.user}"}
    got = wsgi_call(world, "POST", REGENERATIONS, b'{"totp": "123456"}', headers, chunked=True)
    assert_problem(got, 409, "mfa-not-enrolled")  # not "the body must be an object"


def test_a_chunked_body_the_server_does_not_terminate_is_refused(
    world: ApiWorld, people: People
) -> None:
    headers = {**JSON, "Authorization": f"Bearer {people.user}"}
    got = wsgi_call(
        world, "POST", REGENERATIONS, b'{"totp": "1"}', headers, chunked=True, terminated=False
    )
    assert_problem(got, 400, "invalid-request")


def test_a_malformed_content_length_is_400(world: ApiWorld, people: People) -> None:
    headers = {**JSON, "Authorization": f"Bearer {people.user}"}
    got = wsgi_call(world, "POST", REGENERATIONS, b"{}", headers, content_length="12abc")
    assert_problem(got, 400, "invalid-request")


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"totp": "123456",}', b"\xff\xfe{}", b"[" * 40000, b"{'totp': '123456'}"],
    ids=["truncated", "trailing-comma", "not-utf8", "deep-nesting", "single-quotes"],
)
def test_bad_json_is_400(world: ApiWorld, people: People, body: bytes) -> None:
    got = world.call("POST", REGENERATIONS, people.user, body=body, headers=JSON)
    assert_problem(got, 400, "invalid-request")


@pytest.mark.parametrize("body", [b"[]", b'"123456"', b"123456", b"true", b"null"])
def test_json_that_is_not_an_object_is_422(world: ApiWorld, people: People, body: bytes) -> None:
    got = world.call("POST", REGENERATIONS, people.user, body=body, headers=JSON)
    assert assert_problem(got, 422, "invalid-request")["field"] == "body"


def test_a_body_that_is_not_json_is_refused(world: ApiWorld, people: People) -> None:
    headers = {"Content-Type": "text/plain"}
    got = world.call("POST", REGENERATIONS, people.user, body=b'{"totp":"123456"}', headers=headers)
    assert got.status_code in (400, 415, 422)
    assert_problem(got, got.status_code)


def test_a_bad_idempotency_key_is_422_naming_the_header(world: ApiWorld, people: People) -> None:
    got = world.call(
        "POST",
        REGENERATIONS,
        people.user,
        json={"totp": "123456"},
        headers={"Idempotency-Key": "k" * 256},
    )
    assert assert_problem(got, 422, "invalid-request")["field"] == "Idempotency-Key"


# --- health and readiness ------------------------------------------------------------------------


def test_healthz_answers_ok(world: ApiWorld) -> None:
    got = world.call("GET", "/healthz")
    assert (got.status_code, got.json) == (200, {"status": "ok"})


def test_readyz_answers_ok_when_database_and_broker_answer(world: ApiWorld) -> None:
    got = world.call("GET", "/readyz")
    assert got.status_code == 200, got.text
    assert got.json == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def _app(tmp_path: Path, **env: str) -> tuple[testing.TestClient, Services]:
    settings = make_settings(tmp_path, **env)
    services = Services.build(settings)
    publisher = Publisher(make_celery(settings), services)
    return testing.TestClient(create_app(settings, services, publisher)), services


def test_readyz_names_an_unreachable_broker(tmp_path: Path) -> None:
    port = closed_port()
    client, services = _app(tmp_path, MFA_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{port}//")
    try:
        started = time.monotonic()
        got = client.simulate_get("/readyz")
        assert time.monotonic() - started < 10
        assert got.status_code == 503, got.text
        assert got.json == {
            "status": "unavailable",
            "checks": {"database": "ok", "broker": "unavailable"},
        }
        assert str(port) not in got.text and "guest" not in got.text
        assert client.simulate_get("/healthz").status_code == 200
    finally:
        services.close()


def test_readyz_names_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nowhere"
    client, services = _app(tmp_path, MFA_DATABASE_URL=url)
    try:
        got = client.simulate_get("/readyz")
        assert got.status_code == 503, got.text
        assert got.json == {
            "status": "unavailable",
            "checks": {"database": "unavailable", "broker": "ok"},
        }
        assert client.simulate_get("/healthz").status_code == 200
        # A request that needs the database: a 503 problem, nothing of the URL in it.
        refused = client.simulate_get(
            "/v1/me/mfa", headers={"Authorization": "Bearer mfa_" + "x" * 43}
        )
        body = assert_problem(refused, 503, "unavailable")
        assert "nowhere" not in refused.text and "psycopg" not in refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert body["status"] == 503
    finally:
        services.close()


def test_a_user_agent_with_control_characters_is_stored_printable(
    tmp_path: Path, pg_database_url: str, amqp_url: str
) -> None:
    # On PostgreSQL, where a NUL in a text column is refused outright.
    settings = pg_amqp_settings(tmp_path, pg_database_url, amqp_url)
    with api_world(settings, worker=False) as world:
        org = world.org()
        world.user(org)
        tok = world.token(org, "alice", "user")
        got = world.call(
            "POST", "/v1/me/mfa/enrollment", tok, headers={"User-Agent": "evil\x00agent\x1b[31m"}
        )
        assert got.status_code == 201
        with world.services.unit_of_work() as uow:
            agents = uow.session.scalars(
                select(AuditEvent.user_agent).where(
                    AuditEvent.org_id == org, AuditEvent.type == "mfa.enrollment.started"
                )
            ).all()
        assert agents == ["evilagent[31m"]


MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_the_trail_answers_timestamps_with_milliseconds(world: ApiWorld, people: People) -> None:
    """Every timestamp of the API is RFC 3339 UTC with milliseconds, the trail's too."""
    with world.services.unit_of_work() as uow:
        checkpoint_org(uow, world.services.settings, people.org, datetime.now(UTC))
    events = world.call("GET", "/v1/audit/events", people.auditor).json["events"]
    assert events and all(MILLIS.match(e["occurred_at"]) for e in events), events[0]
    export = world.call(
        "GET", "/v1/audit/events", people.auditor, headers={"Accept": "application/x-ndjson"}
    )
    assert all(MILLIS.match(json.loads(line)["occurred_at"]) for line in export.text.splitlines())
    checkpoint = world.call("GET", "/v1/audit/verification", people.auditor).json["checkpoint"]
    assert MILLIS.match(checkpoint["signed_at"]), checkpoint
