"""Users over the API (PUT, GET, DELETE /v1/users/{id}, GET /v1/users, GET /v1/me/events),
on SQLite and on PostgreSQL: upsert semantics, validation, pages, deletion and what
the trail records of it (never an address)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from falcon import testing
from sqlalchemy import func, select

from domain import audit, tokens
from domain.audit.types import EventType
from domain.audit.verify import verify_chain
from domain.models import ApiToken, AuditEvent, TokenKind
from tests.support.api_world import ApiWorld, world_on

EMAIL = "Alice.Example@Example.COM"
EMAIL_NORMALIZED = "Alice.Example@example.com"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    with world_on(request, tmp_path_factory, "users") as built:
        yield built


class Org:
    """An organization with an admin, a service and an auditor token."""

    def __init__(self, world: ApiWorld) -> None:
        self.world = world
        self.id = world.org()
        self.admin = world.token(self.id, "root", "admin")
        self.service = world.token(self.id, "app-backend", "service")
        self.n = 0

    def put(self, user_id: str, body: Any, token: str | None = None) -> testing.Result:
        return self.world.call("PUT", f"/v1/users/{user_id}", token or self.service, body)

    def get(self, user_id: str, token: str | None = None) -> testing.Result:
        return self.world.call("GET", f"/v1/users/{user_id}", token or self.service)

    def delete(self, user_id: str) -> testing.Result:
        return self.world.call("DELETE", f"/v1/users/{user_id}", self.admin)

    def source(self) -> str:
        """A fresh source address: refusals are throttled per (token, source)."""
        self.n += 1
        return f"198.18.7.{self.n % 250 + 1}"

    def events(self, type_: str | None = None) -> list[AuditEvent]:
        with self.world.services.unit_of_work() as uow:
            query = select(AuditEvent).where(AuditEvent.org_id == self.id)
            if type_ is not None:
                query = query.where(AuditEvent.type == type_)
            return list(uow.session.scalars(query.order_by(AuditEvent.seq)))


@pytest.fixture
def org(world: ApiWorld) -> Org:
    return Org(world)


# --- upsert ----------------------------------------------------------------------------


def test_put_creates_then_updates_keeping_what_is_left_out(org: Org) -> None:
    created = org.put("u-1", {"email": EMAIL, "display_name": "Alice"})
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json
    assert body["user_id"] == "u-1"
    assert body["email"] == EMAIL_NORMALIZED  # stored in its normalized form
    assert body["recovery_email"] is None  # left out on create: null
    assert body["display_name"] == "Alice"
    assert body["created_at"].endswith("Z")
    assert body["mfa"]["enrolled"] is False and body["mfa"]["backup_codes"] is None
    assert set(body["mfa"]["limits"]) == {
        "totp_throttled_until",
        "totp_locked",
        "backup_codes_locked",
    }

    updated = org.put("u-1", {"recovery_email": "alice@backup.example.org"})
    assert updated.status_code == 200, updated.text
    assert updated.json["email"] == EMAIL_NORMALIZED  # kept
    assert updated.json["display_name"] == "Alice"  # kept
    assert updated.json["recovery_email"] == "alice@backup.example.org"
    assert updated.json["created_at"] == body["created_at"]

    cleared = org.put("u-1", {"display_name": None, "email": None})
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json["email"], cleared.json["display_name"]) == (None, None)
    assert cleared.json["recovery_email"] == "alice@backup.example.org"
    assert org.get("u-1").json == cleared.json


def test_an_empty_body_creates_a_bare_user_and_then_changes_nothing(org: Org) -> None:
    assert org.put("bare", {}).status_code == 201
    again = org.put("bare", {}, token=org.admin)
    assert again.status_code == 200
    assert (again.json["email"], again.json["display_name"]) == (None, None)
    assert [e.details for e in org.events(EventType.USER_UPSERTED)] == [
        {"created": True, "changed": []}
    ]


def test_put_twice_with_the_same_body_is_one_event(org: Org) -> None:
    """Applications call PUT at every sign-in: the second, identical call appends nothing."""
    body = {"email": "bob@example.org", "display_name": "Bob"}
    assert org.put("bob", body).status_code == 201
    head = len(org.events())
    for _ in range(3):
        assert org.put("bob", body).status_code == 200
    # Same address spelled otherwise: normalizes to the stored form, so no change either.
    assert org.put("bob", {"email": "bob@EXAMPLE.org"}).status_code == 200
    assert len(org.events()) == head
    changed = org.put("bob", {"display_name": "Robert"})
    assert changed.status_code == 200
    upserts = org.events(EventType.USER_UPSERTED)
    assert [e.details for e in upserts] == [
        {"created": True, "changed": ["email", "display_name"]},
        {"created": False, "changed": ["display_name"]},
    ]
    last = upserts[-1]
    assert (last.user_id, last.actor_principal_id, last.actor_role) == (
        "bob",
        "app-backend",
        "service",
    )
    assert last.request_id and last.server_request_id


def test_concurrent_creating_puts_make_one_user(org: Org, world: ApiWorld) -> None:
    results: list[int] = []

    def put(n: int) -> None:
        results.append(org.put("racer", {"display_name": f"n{n}"}).status_code)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [200, 200, 200, 201]
    created = [e for e in org.events(EventType.USER_UPSERTED) if e.details["created"]]
    assert len(created) == 1


def test_the_trail_never_holds_an_address(org: Org, world: ApiWorld) -> None:
    addresses = ["secret.person@example.org", "recover.me@example.net", "new.one@example.com"]
    assert org.put("p", {"email": addresses[0], "recovery_email": addresses[1]}).status_code == 201
    assert org.put("p", {"email": addresses[2]}).status_code == 200
    assert org.put("p", {"recovery_email": None}).status_code == 200
    assert org.delete("p").status_code == 204
    stored = json.dumps(
        [
            {c.name: str(getattr(e, c.name)) for c in AuditEvent.__table__.columns}
            for e in org.events()
        ]
    ).lower()
    for address in addresses:
        assert address.lower() not in stored
        assert address.split("@")[0] not in stored  # not even the local part
    types = [e.type for e in org.events() if e.user_id == "p"]
    assert types == [EventType.USER_UPSERTED] * 3 + [EventType.USER_DELETED]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"recovery_email": "x@@example.org"}, "recovery_email"),
        ({"email": "nul\u0000@example.org"}, "email"),
        ({"email": ""}, "email"),
        ({"email": 5}, "email"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 201}, "display_name"),
        ({"display_name": "bell\u0007"}, "display_name"),
        ({"display_name": "nul\u0000"}, "display_name"),
        ({"display_name": "evil\u202eeman"}, "display_name"),
        ({"display_name": ["a"]}, "display_name"),
        ({"role": "admin"}, "role"),
        ([], "body"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(org: Org, body: Any, field: str) -> None:
    got = org.put("v", body)
    assert got.status_code == 422, got.text
    assert got.json["type"] == "/problems/invalid-request"
    assert got.json["field"] == field
    assert org.get("v").status_code == 404  # nothing was created


def test_bad_json_is_400(org: Org) -> None:
    got = org.world.call(
        "PUT",
        "/v1/users/v",
        org.service,
        body="{nope",
        headers={"Content-Type": "application/json"},
    )
    assert got.status_code == 400 and got.json["type"] == "/problems/invalid-request"


@pytest.mark.parametrize("user_id", ["x" * 129, "sp ace", "tab%09", "nul%00", "é"])
def test_bad_user_ids_are_422(org: Org, user_id: str) -> None:
    got = org.put(user_id, {"display_name": "x"})
    assert got.status_code == 422, got.text
    assert got.json["field"] == "user_id"


def test_every_allowed_character_and_the_longest_id_are_accepted(org: Org) -> None:
    for user_id in ["a.b_c@d+e-f", "x" * 128, "-", "@"]:
        got = org.put(user_id, {})
        assert got.status_code == 201, (user_id, got.text)
        assert org.get(user_id).json["user_id"] == user_id


def test_another_organizations_user_is_404_and_not_touched(org: Org, world: ApiWorld) -> None:
    other = Org(world)
    assert other.put("shared-name", {"display_name": "Theirs"}).status_code == 201
    mine = org.get("shared-name")
    assert mine.status_code == 404 and mine.json["type"] == "/problems/not-found"
    unknown = org.get("never-was")
    assert (unknown.status_code, unknown.json) == (404, mine.json)  # no hint either way
    gone = world.call("DELETE", "/v1/users/shared-name", org.admin)
    assert gone.status_code == 404
    # A PUT in my organization makes my own user: theirs keeps its name.
    assert org.put("shared-name", {"display_name": "Mine"}).status_code == 201
    assert other.get("shared-name").json["display_name"] == "Theirs"


def test_roles(org: Org, world: ApiWorld) -> None:
    auditor = world.token(org.id, "aud", "auditor")
    world.user(org.id, "someone")
    user = world.token(org.id, "someone", "user")
    for token in (auditor, user):
        for method, path in [
            ("PUT", "/v1/users/someone"),
            ("GET", "/v1/users/someone"),
            ("DELETE", "/v1/users/someone"),
            ("GET", "/v1/users"),
        ]:
            got = world.call(method, path, token, {}, remote_addr=org.source())
            assert got.status_code == 403, (method, path, got.text)
    refused = world.call("DELETE", "/v1/users/someone", org.service, remote_addr=org.source())
    assert refused.status_code == 403
    assert world.call("GET", "/v1/users", org.service).status_code == 403
    assert org.get("someone").status_code == 200
    denied = org.events(EventType.ACCESS_DENIED)
    assert any(e.details["method"] == "DELETE" and e.actor_role == "service" for e in denied)


# --- pages -----------------------------------------------------------------------------


def _walk(org: Org, limit: int, during: Any = None) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):  # bounded
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        got = org.world.call("GET", "/v1/users", org.admin, query_string=query)
        assert got.status_code == 200, got.text
        assert len(got.json["users"]) <= limit
        seen.extend(u["user_id"] for u in got.json["users"])
        cursor = got.json["next"]
        if during is not None:
            during()
        if cursor is None:
            return seen
    raise AssertionError("the walk never ended")


def test_pages_walk_every_user_exactly_once_while_users_are_added(org: Org) -> None:
    existing = [f"e{n:02d}" for n in range(23)]
    for user_id in existing:
        assert org.put(user_id, {}).status_code == 201
    added: list[str] = []

    def add_two() -> None:
        for _ in range(2):
            added.append(f"new{len(added):03d}")
            assert org.put(added[-1], {}).status_code == 201

    seen = _walk(org, 5, during=add_two)
    assert len(seen) == len(set(seen)), "a user was on two pages"
    assert seen[: len(existing)] == existing  # every one there before, oldest first
    assert set(seen) <= set(existing) | set(added)
    assert _walk(org, 1000) == existing + added  # afterwards: everyone, once, in order


def test_the_default_page_and_the_end(org: Org) -> None:
    assert org.put("only", {}).status_code == 201
    got = org.world.call("GET", "/v1/users", org.admin)
    assert got.status_code == 200
    assert [u["user_id"] for u in got.json["users"]] == ["only"] and got.json["next"] is None
    assert got.json["users"][0]["mfa"]["enrolled"] is False


def test_a_page_never_shows_another_organizations_users(org: Org, world: ApiWorld) -> None:
    other = Org(world)
    assert other.put("stranger", {}).status_code == 201
    assert org.put("local", {}).status_code == 201
    got = world.call("GET", "/v1/users", org.admin)
    assert [u["user_id"] for u in got.json["users"]] == ["local"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1&limit=2", "limit"),
        ("cursor=garbage!", "cursor"),
        ("cursor=WzEsMl0", "cursor"),  # base64 of [1,2]: well-formed, not ours
        ("cursor=" + "A" * 300, "cursor"),
        ("color=red", "color"),
    ],
)
def test_bad_page_parameters_are_422(org: Org, query: str, field: str) -> None:
    got = org.world.call("GET", "/v1/users", org.admin, query_string=query)
    assert got.status_code == 422, got.text
    assert got.json["field"] == field


# --- deletion --------------------------------------------------------------------------


def test_delete_removes_the_user_and_its_tokens_and_the_chain_verifies(
    org: Org, world: ApiWorld
) -> None:
    token, _ = world.enroll(org.id, "leaver")
    with world.services.unit_of_work() as uow:
        tokens.issue(uow, org.id, "leaver", "user", audit.CLI, kind=TokenKind.SESSION)
    assert world.call("GET", "/v1/me/mfa", token).status_code == 200
    gone = org.delete("leaver")
    assert gone.status_code == 204 and gone.text == ""
    assert world.call("GET", "/v1/me/mfa", token).status_code == 401  # the very next request
    assert org.get("leaver").status_code == 404
    assert org.delete("leaver").status_code == 404
    with world.services.unit_of_work() as uow:
        left = uow.session.scalar(
            select(func.count())
            .select_from(ApiToken)
            .where(ApiToken.org_id == org.id, ApiToken.principal_id == "leaver")
        )
        assert left == 0
        verdict = verify_chain(uow.session, org.id, world.settings)
    assert verdict.ok, verdict.reason
    deleted = org.events(EventType.USER_DELETED)
    assert len(deleted) == 1
    assert deleted[0].actor_principal_id == "root" and deleted[0].user_id == "leaver"
    assert deleted[0].details["was_enrolled"] is True
    assert deleted[0].details["tokens_removed"] == 2
    # Its history stays in the trail.
    assert any(
        e.type == EventType.ENROLLMENT_CONFIRMED for e in org.events() if e.user_id == "leaver"
    )
    # The id can be provisioned again, as a new user.
    again = org.put("leaver", {})
    assert again.status_code == 201 and again.json["mfa"]["enrolled"] is False


# --- the user's own events -----------------------------------------------------------


def test_me_events_shows_only_the_users_own_events_newest_first(org: Org, world: ApiWorld) -> None:
    token, _ = world.enroll(org.id, "carol")
    world.enroll(org.id, "dave")
    other = Org(world)
    world.enroll(other.id, "carol")  # the same id in another organization
    got = world.call("GET", "/v1/me/events", token)
    assert got.status_code == 200, got.text
    events = got.json["events"]
    assert events, "carol has events"
    mine = [e for e in org.events() if e.user_id == "carol"]
    assert [e["type"] for e in events] == [e.type for e in reversed(mine)]
    assert set(events[0]) == {
        "type",
        "occurred_at",
        "outcome",
        "source_ip",
        "user_agent",
        "details",
    }
    assert [e["occurred_at"] for e in events] == sorted(
        (e["occurred_at"] for e in events), reverse=True
    )
    limited = world.call("GET", "/v1/me/events", token, query_string="limit=1")
    assert limited.json["events"] == events[:1]
    for query in ("limit=0", "limit=201", "limit=x", "since=1"):
        bad = world.call("GET", "/v1/me/events", token, query_string=query)
        assert bad.status_code == 422, (query, bad.text)
    assert world.call("GET", "/v1/me/events", org.admin).status_code == 403


def test_me_events_of_a_reprovisioned_id_starts_afresh(org: Org, world: ApiWorld) -> None:
    world.enroll(org.id, "erin")
    assert org.delete("erin").status_code == 204
    assert org.put("erin", {}).status_code == 201
    token = world.token(org.id, "erin", "user")
    got = world.call("GET", "/v1/me/events", token)
    types = [e["type"] for e in got.json["events"]]
    assert EventType.ENROLLMENT_CONFIRMED not in types  # the previous erin's
    assert EventType.USER_UPSERTED in types
