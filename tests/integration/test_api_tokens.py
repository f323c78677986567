"""Tokens over the API (docs/api.md "Users and tokens"): a short-lived user token for a
signed-in user, the organization's tokens listed (never a token) and revoked, sign-out,
and last_used_at kept at most once a minute a token. On SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from falcon import testing
from sqlalchemy import event, select, update

from api import auth
from domain import audit, throttles, tokens
from domain.audit.types import EventType
from domain.models import ApiToken
from tests.support.api_world import ApiWorld, world_on
from tests.support.records import events
from tests.support.throttling import in_one_window

STATUS = "/v1/me/mfa"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    with world_on(request, tmp_path_factory, "apitokens") as built:
        yield built


def issue(world: ApiWorld, org: str, principal: str, role: str) -> tuple[str, str]:
    with world.services.unit_of_work() as uow:
        row, plaintext = tokens.issue(uow, org, principal, role, audit.CLI)
        return row.id, plaintext


def mint(world: ApiWorld, org: str, user: str, caller: str, body: Any = None) -> testing.Result:
    return world.call("POST", f"/v1/users/{user}/tokens", caller, json=body)


def assert_problem(got: testing.Result, status: int, slug: str) -> None:
    assert got.status_code == status, got.text
    assert got.json["type"] == f"/problems/{slug}"


def row_of(world: ApiWorld, token_id: str) -> ApiToken:
    with world.services.unit_of_work() as uow:
        row = uow.session.get(ApiToken, token_id)
        assert row is not None
        return row


# --- POST /v1/users/{id}/tokens ------------------------------------------------------


@pytest.mark.parametrize("role", ["service", "admin"])
def test_a_user_token_is_issued_for_fifteen_minutes_by_default(world: ApiWorld, role: str) -> None:
    org = world.org()
    world.user(org, "alice")
    _, caller = issue(world, org, "backend", role)
    before = datetime.now(UTC)
    got = mint(world, org, "alice", caller)
    assert got.status_code == 201, got.text
    assert got.headers["cache-control"] == "no-store"
    body = got.json
    assert set(body) == {"token", "token_id", "role", "expires_at"}
    assert body["role"] == "user"
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=899) <= expires <= datetime.now(UTC) + timedelta(seconds=901)
    # The token is the user's: it reads the user's own status.
    assert world.call("GET", STATUS, body["token"]).status_code == 200
    row = row_of(world, body["token_id"])
    assert (row.principal_id, row.role, row.kind) == ("alice", "user", "token")
    assert row.token_hash == hashlib.sha256(body["token"].encode()).hexdigest()
    [issued] = [
        e
        for e in events(world.services, org, EventType.TOKEN_ISSUED)
        if e.details["issued_token_id"] == body["token_id"]
    ]
    assert issued.details["ttl_seconds"] == 900
    assert (issued.actor_principal_id, issued.actor_role, issued.user_id) == (
        "backend",
        role,
        "alice",
    )
    assert body["token"] not in repr(issued.details)


@pytest.mark.parametrize("ttl", [60, 3600])
def test_the_ttl_may_be_chosen_from_a_minute_to_an_hour(world: ApiWorld, ttl: int) -> None:
    org = world.org()
    world.user(org)
    _, caller = issue(world, org, "backend", "service")
    got = mint(world, org, "alice", caller, {"ttl_seconds": ttl})
    assert got.status_code == 201, got.text
    row = row_of(world, got.json["token_id"])
    assert row.expires_at is not None
    assert row.expires_at - row.created_at == timedelta(seconds=ttl)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttl_seconds": 59}, "ttl_seconds"),
        ({"ttl_seconds": 3601}, "ttl_seconds"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": -900}, "ttl_seconds"),
        ({"ttl_seconds": 10**30}, "ttl_seconds"),
        ({"ttl_seconds": "900"}, "ttl_seconds"),
        ({"ttl_seconds": 900.0}, "ttl_seconds"),
        ({"ttl_seconds": True}, "ttl_seconds"),
        ({"ttl_seconds": None}, "ttl_seconds"),
        ({"ttl": 900}, "ttl"),
        ([900], "body"),
    ],
)
def test_a_bad_ttl_is_422_naming_the_field(world: ApiWorld, body: Any, field: str) -> None:
    org = world.org()
    world.user(org)
    _, caller = issue(world, org, "backend", "service")
    got = mint(world, org, "alice", caller, body)
    assert_problem(got, 422, "invalid-request")
    assert got.json["field"] == field


def test_an_unknown_user_or_one_of_another_organization_is_404_alike(world: ApiWorld) -> None:
    org, other = world.org(), world.org()
    world.user(other, "carol")
    _, caller = issue(world, org, "backend", "service")
    theirs = mint(world, org, "carol", caller)
    nobody = mint(world, org, "nobody", caller)
    assert_problem(theirs, 404, "not-found")
    assert theirs.json == nobody.json
    for odd in ("x" * 129, "a%00b"):
        assert_problem(mint(world, org, odd, caller), 404, "not-found")
    assert events(world.services, other, EventType.TOKEN_ISSUED) == []


def test_a_user_token_cannot_issue_tokens(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    _, user = issue(world, org, "alice", "user")
    assert_problem(mint(world, org, "alice", user), 403, "forbidden")


# --- GET /v1/org/tokens -------------------------------------------------------------


def test_the_list_is_newest_first_in_pages_and_never_shows_a_token(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    admin_id, admin = issue(world, org, "root", "admin")
    made = [admin_id] + [issue(world, org, "alice", "user")[0] for _ in range(4)]
    clear = [mint(world, org, "alice", admin).json for _ in range(2)]
    made += [c["token_id"] for c in clear]
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10):
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        got = world.call("GET", "/v1/org/tokens", admin, query_string=query)
        assert got.status_code == 200, got.text
        assert len(got.json["tokens"]) <= 3
        seen += got.json["tokens"]
        cursor = got.json["next"]
        if cursor is None:
            break
        for secret in [c["token"] for c in clear] + [admin]:
            assert secret not in got.text
            assert hashlib.sha256(secret.encode()).hexdigest() not in got.text
    assert [t["token_id"] for t in seen] == list(reversed(made))
    assert set(seen[0]) == {
        "token_id",
        "principal_id",
        "role",
        "kind",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }
    assert seen[0]["expires_at"] is not None and seen[-1]["expires_at"] is None


def test_the_list_filters_by_role_principal_and_revocation(world: ApiWorld) -> None:
    org = world.org()
    world.user(org, "alice")
    world.user(org, "bob")
    _, admin = issue(world, org, "root", "admin")
    alice, _ = issue(world, org, "alice", "user")
    bob, _ = issue(world, org, "bob", "user")
    service, _ = issue(world, org, "frontend", "service")
    assert world.call("DELETE", f"/v1/org/tokens/{bob}", admin).status_code == 204

    def ids(query: str) -> list[str]:
        got = world.call("GET", "/v1/org/tokens", admin, query_string=query)
        assert got.status_code == 200, got.text
        return [t["token_id"] for t in got.json["tokens"]]

    assert ids("role=user") == [bob, alice]
    assert ids("role=service") == [service]
    assert ids("principal_id=alice") == [alice]
    assert ids("role=user&include_revoked=false") == [alice]
    assert ids("role=user&include_revoked=true") == [bob, alice]
    [revoked] = [
        t for t in world.call("GET", "/v1/org/tokens", admin).json["tokens"] if t["token_id"] == bob
    ]
    assert revoked["revoked_at"] is not None


def test_the_list_shows_only_the_callers_organization(world: ApiWorld) -> None:
    org, other = world.org(), world.org()
    theirs, _ = issue(world, other, "root", "admin")
    _, admin = issue(world, org, "root", "admin")
    listed = world.call("GET", "/v1/org/tokens", admin, query_string="limit=1000").json["tokens"]
    assert theirs not in {t["token_id"] for t in listed}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("limit=1&limit=2", "limit"),
        ("role=root", "role"),
        ("include_revoked=yes", "include_revoked"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=" + "A" * 200, "cursor"),
        ("principal_id=" + "p" * 129, "principal_id"),
        ("principal_id=a%00b", "principal_id"),
        ("token=x", "token"),
    ],
)
def test_a_bad_query_parameter_is_422(world: ApiWorld, query: str, field: str) -> None:
    org = world.org()
    _, admin = issue(world, org, "root", "admin")
    got = world.call("GET", "/v1/org/tokens", admin, query_string=query)
    assert_problem(got, 422, "invalid-request")
    assert got.json["field"] == field


# --- DELETE /v1/org/tokens/{id} and DELETE /v1/me/token -------------------------------


def test_an_admin_revokes_a_token_which_is_refused_from_the_next_request_on(
    world: ApiWorld,
) -> None:
    org = world.org()
    world.user(org)
    admin_id, admin = issue(world, org, "root", "admin")
    victim = mint(world, org, "alice", admin).json
    assert world.call("GET", STATUS, victim["token"]).status_code == 200
    got = world.call("DELETE", f"/v1/org/tokens/{victim['token_id']}", admin)
    assert got.status_code == 204, got.text
    assert_problem(world.call("GET", STATUS, victim["token"]), 401, "unauthenticated")
    [revoked] = events(world.services, org, EventType.TOKEN_REVOKED)
    assert revoked.details["revoked_token_id"] == victim["token_id"]
    assert (revoked.actor_principal_id, revoked.actor_role, revoked.actor_token_id) == (
        "root",
        "admin",
        admin_id,
    )
    assert revoked.user_id == "alice"
    # Again: nothing changes, nothing is appended.
    assert world.call("DELETE", f"/v1/org/tokens/{victim['token_id']}", admin).status_code == 204
    assert len(events(world.services, org, EventType.TOKEN_REVOKED)) == 1


def test_a_token_of_another_organization_is_404_like_none_and_stays_alive(world: ApiWorld) -> None:
    org, other = world.org(), world.org()
    theirs_id, theirs = issue(world, other, "root", "admin")
    _, admin = issue(world, org, "root", "admin")
    foreign = world.call("DELETE", f"/v1/org/tokens/{theirs_id}", admin)
    unknown = world.call("DELETE", "/v1/org/tokens/00000000-0000-4000-8000-000000000000", admin)
    assert_problem(foreign, 404, "not-found")
    assert foreign.json == unknown.json
    for odd in ("x" * 37, "a%00b"):
        assert_problem(world.call("DELETE", f"/v1/org/tokens/{odd}", admin), 404, "not-found")
    assert world.call("GET", "/v1/org/policy", theirs).status_code == 200
    assert row_of(world, theirs_id).revoked_at is None


def test_guessing_token_ids_is_throttled_like_every_404(world: ApiWorld) -> None:
    org = world.org()
    _, admin = issue(world, org, "root", "admin")

    def run(source: str) -> list[int]:
        return [
            world.call("DELETE", f"/v1/org/tokens/guess-{n}", admin, remote_addr=source).status_code
            for n in range(throttles.REFUSALS_PER_MINUTE + 1)
        ]

    answers = in_one_window(run)
    assert set(answers[:-1]) == {404}
    assert answers[-1] == 429


@pytest.mark.parametrize("role", ["user", "service"])
def test_only_an_admin_revokes_others_tokens(world: ApiWorld, role: str) -> None:
    org = world.org()
    world.user(org)
    target_id, target = issue(world, org, "root", "admin")
    _, caller = issue(world, org, "alice" if role == "user" else "frontend", role)
    got = world.call("DELETE", f"/v1/org/tokens/{target_id}", caller)
    assert_problem(got, 403, "forbidden")
    assert world.call("GET", "/v1/org/tokens", caller).status_code == 403
    assert world.call("GET", "/v1/org/policy", target).status_code == 200


@pytest.mark.parametrize("role", ["user", "service", "admin", "auditor"])
def test_sign_out_revokes_the_presenting_token_only(world: ApiWorld, role: str) -> None:
    org = world.org()
    world.user(org)
    principal = "alice" if role == "user" else f"{role}-1"
    mine_id, mine = issue(world, org, principal, role)
    _, other = issue(world, org, principal, role)
    got = world.call("DELETE", "/v1/me/token", mine)
    assert got.status_code == 204, got.text
    assert_problem(world.call("DELETE", "/v1/me/token", mine), 401, "unauthenticated")
    assert row_of(world, mine_id).revoked_at is not None
    [signed_out] = events(world.services, org, EventType.TOKEN_REVOKED)
    assert signed_out.details["revoked_token_id"] == mine_id
    assert signed_out.details["reason"] == "signed-out"
    assert signed_out.actor_token_id == mine_id
    # The principal's other token lives on.
    assert world.call("DELETE", "/v1/me/token", other).status_code == 204


# --- last_used_at ---------------------------------------------------------------------


@pytest.fixture
def token_writes(world: ApiWorld) -> Iterator[list[str]]:
    """The UPDATEs of api_tokens the engine sends while the test runs."""
    seen: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_TOKENS"):
            seen.append(statement)

    event.listen(world.services.engine, "before_cursor_execute", spy)
    try:
        yield seen
    finally:
        event.remove(world.services.engine, "before_cursor_execute", spy)


def test_last_used_at_is_written_once_a_minute_not_on_every_request(
    world: ApiWorld, token_writes: list[str]
) -> None:
    org = world.org()
    world.user(org)
    token_id, tok = issue(world, org, "alice", "user")
    assert row_of(world, token_id).last_used_at is None
    before = datetime.now(UTC)
    for _ in range(5):
        assert world.call("GET", STATUS, tok).status_code == 200
    assert len(token_writes) == 1
    first = row_of(world, token_id).last_used_at
    assert first is not None and before <= first <= datetime.now(UTC)
    # A minute later (the last use moved back instead of the clock forward): one write more.
    with world.services.unit_of_work() as uow:
        uow.session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id)
            .values(last_used_at=first - timedelta(seconds=61))
        )
    token_writes.clear()
    for _ in range(3):
        assert world.call("GET", STATUS, tok).status_code == 200
    assert len(token_writes) == 1
    second = row_of(world, token_id).last_used_at
    assert second is not None and second > first
    listed = world.call("GET", "/v1/org/tokens", issue(world, org, "root", "admin")[1])
    [shown] = [t for t in listed.json["tokens"] if t["token_id"] == token_id]
    assert datetime.fromisoformat(shown["last_used_at"]) == second.replace(
        microsecond=second.microsecond // 1000 * 1000
    )


def test_marking_a_token_used_twice_within_the_minute_writes_once(world: ApiWorld) -> None:
    """The conditional UPDATE itself: of two writers that both read a stale row, one writes."""
    org = world.org()
    token_id, _ = issue(world, org, "root", "admin")
    now = datetime.now(UTC)
    with world.services.unit_of_work() as uow:
        assert tokens.mark_used(uow.session, token_id, now) is True
    with world.services.unit_of_work() as uow:
        assert tokens.mark_used(uow.session, token_id, now + timedelta(seconds=59)) is False
    with world.services.unit_of_work() as uow:
        assert tokens.mark_used(uow.session, token_id, now + timedelta(seconds=60)) is True
        stored = uow.session.scalar(select(ApiToken.last_used_at).where(ApiToken.id == token_id))
    assert stored == now + timedelta(seconds=60)


def test_a_token_whose_row_is_locked_is_authenticated_without_waiting(world: ApiWorld) -> None:
    """The last_used_at write never blocks a request: while another transaction holds
    the token's row (PostgreSQL) or the write lock (SQLite), authentication answers
    at once and the write is left for a later request."""
    org = world.org()
    world.user(org)
    token_id, tok = issue(world, org, "alice", "user")
    req = testing.create_req(headers={"Authorization": f"Bearer {tok}"})
    answered: list[auth.Principal] = []
    with world.services.unit_of_work() as uow:
        # The revocation's own first step: the row, for update (SQLite: BEGIN IMMEDIATE).
        uow.session.execute(
            select(ApiToken).where(ApiToken.id == token_id).with_for_update()
        ).scalar_one()
        caller = threading.Thread(
            target=lambda: answered.append(auth.authenticate(req, world.services, "127.0.0.1"))
        )
        caller.start()
        caller.join(timeout=20)  # bounded: a wait for the lock would outlast the block
        assert not caller.is_alive(), "authentication waited for the token's row"
    assert [p.token_id for p in answered] == [token_id]
    assert row_of(world, token_id).last_used_at is None  # skipped, written next time
    assert world.call("GET", STATUS, tok).status_code == 200
    assert row_of(world, token_id).last_used_at is not None
