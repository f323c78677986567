"""POST /v1/users/{id}/totp/verify: the second factor at sign-in (docs/api.md "Sign-in").
Judged now +-1 step, a step once; the TOTP budget of "Attempt limits"; audited with what
the front end saw of its visitor; and of concurrent requests with one valid code,
exactly one is accepted. On SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from falcon import testing
from sqlalchemy import select, update

from domain import accounts, audit, tokens
from domain.audit.types import EventType, Outcome
from domain.models import AttemptLimit
from tests.integration.codes_fixtures import run_together
from tests.support.api_world import ApiWorld, world_on
from tests.support.codes import clear_of_a_step_end, wrong_totp
from tests.support.records import events

VISITOR = {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (sign-in page)"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    with world_on(request, tmp_path_factory, "totpsignin") as built:
        yield built


def service_token(world: ApiWorld, org: str) -> str:
    with world.services.unit_of_work() as uow:
        _, plaintext = tokens.issue(uow, org, "login-page", "service", audit.CLI)
    return plaintext


def check(world: ApiWorld, token: str, user: str, body: Any) -> testing.Result:
    return world.call("POST", f"/v1/users/{user}/totp/verify", token, json=body)


def enrolled(world: ApiWorld, user: str = "alice") -> tuple[str, str]:
    """(organization, service token) with `user` enrolled; the enrollment used the step
    of now, so the next step's code is the first one sign-in can accept."""
    org = world.org()
    world.enroll(org, user)
    return org, service_token(world, org)


def totp_events(world: ApiWorld, org: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.type, e.outcome, e.details)
        for e in events(world.services, org)
        if e.type.startswith("mfa.totp.")
    ]


def standing(world: ApiWorld, org: str, user: str = "alice") -> tuple[int, int] | None:
    with world.services.unit_of_work() as uow:
        row = uow.session.execute(
            select(AttemptLimit.consecutive_failures, AttemptLimit.window_failures)
            .where(AttemptLimit.factor == "totp")
            .where(AttemptLimit.user_id.in_(_user_ids(world, org, user)))
        ).one_or_none()
    return None if row is None else (row[0], row[1])


def _user_ids(world: ApiWorld, org: str, user: str) -> list[str]:
    with world.services.unit_of_work() as uow:
        return [accounts.get_user(uow.session, org, user).id]


def test_a_valid_code_is_accepted_once_then_it_is_a_replay(world: ApiWorld) -> None:
    org, svc = enrolled(world)
    code = world.totp(org, offset_steps=1)
    first = check(world, svc, "alice", {"totp": code, **VISITOR})
    assert first.status_code == 200, first.text
    assert first.json == {"accepted": True, "replayed": False}
    again = check(world, svc, "alice", {"totp": code, **VISITOR})
    assert again.status_code == 200, again.text
    assert again.json == {"accepted": False, "replayed": True}
    # The step of the enrollment was used up by the enrollment itself.
    earlier = check(world, svc, "alice", {"totp": world.totp(org)})
    assert earlier.json == {"accepted": False, "replayed": True}
    during = {"during": "signin", **VISITOR}
    assert totp_events(world, org) == [
        (EventType.TOTP_ACCEPTED, Outcome.SUCCESS, during),
        (EventType.TOTP_REPLAYED, Outcome.DENIED, during),
        (EventType.TOTP_REPLAYED, Outcome.DENIED, {"during": "signin"}),
    ]
    assert standing(world, org) == (2, 2)  # a replay is a failure


def test_a_wrong_code_is_rejected_and_counted(world: ApiWorld) -> None:
    org, svc = enrolled(world)
    wrong = wrong_totp(world.secrets[(org, "alice")])
    got = check(world, svc, "alice", {"totp": wrong, **VISITOR})
    assert got.status_code == 200, got.text
    assert got.json == {"accepted": False, "replayed": False}
    assert totp_events(world, org) == [
        (EventType.TOTP_REJECTED, Outcome.FAILURE, {"during": "signin", **VISITOR})
    ]
    assert standing(world, org) == (1, 1)
    # A success resets the count and the window.
    ok = check(world, svc, "alice", {"totp": world.totp(org, offset_steps=1)})
    assert ok.json["accepted"] is True
    assert standing(world, org) == (0, 0)


def test_the_window_is_one_step_either_side(world: ApiWorld) -> None:
    org, svc = enrolled(world)
    clear_of_a_step_end()
    assert check(world, svc, "alice", {"totp": world.totp(org, offset_steps=2)}).json == {
        "accepted": False,
        "replayed": False,
    }
    assert check(world, svc, "alice", {"totp": world.totp(org, offset_steps=1)}).json == {
        "accepted": True,
        "replayed": False,
    }


def test_five_failures_throttle_even_a_right_code_then_a_hundred_lock(world: ApiWorld) -> None:
    org, svc = enrolled(world)
    wrong = wrong_totp(world.secrets[(org, "alice")])
    for _ in range(5):
        assert check(world, svc, "alice", {"totp": wrong}).json["accepted"] is False
    throttled = check(world, svc, "alice", {"totp": world.totp(org, offset_steps=1)})
    assert throttled.status_code == 429, throttled.text
    assert throttled.json["type"] == "/problems/too-many-attempts"
    assert 0 < int(throttled.headers["retry-after"]) <= world.settings.lockout_window_seconds
    assert standing(world, org) == (5, 5)  # the refused attempt counted nothing
    refused = [d for t, _, d in totp_events(world, org) if d.get("reason")]
    assert refused == [{"during": "signin", "reason": "too-many-attempts"}]
    # The consecutive cap: 100 failures lock TOTP until an administrator unlocks.
    with world.services.unit_of_work() as uow:
        uow.session.execute(
            update(AttemptLimit)
            .where(AttemptLimit.user_id.in_(_user_ids(world, org, "alice")))
            .where(AttemptLimit.factor == "totp")
            .values(consecutive_failures=99, window_failures=0, window_started_at=None)
        )
    assert check(world, svc, "alice", {"totp": wrong}).json["accepted"] is False
    locked = check(world, svc, "alice", {"totp": world.totp(org, offset_steps=1)})
    assert locked.status_code == 429, locked.text
    assert locked.json["type"] == "/problems/totp-locked"
    assert "retry-after" not in locked.headers
    [permanent] = events(world.services, org, EventType.LOCKOUT_PERMANENT)
    assert permanent.details["factor"] == "totp"


def test_wrong_backup_codes_do_not_throttle_the_totp(world: ApiWorld) -> None:
    org, svc = enrolled(world)
    for _ in range(6):
        world.call(
            "POST", "/v1/users/alice/backup-codes/verify", svc, json={"code": "ZZZZ-ZZZZ-ZZZZ"}
        )
    got = check(world, svc, "alice", {"totp": world.totp(org, offset_steps=1)})
    assert got.status_code == 200, got.text
    assert got.json["accepted"] is True


def test_a_user_not_enrolled_is_409(world: ApiWorld) -> None:
    org = world.org()
    world.user(org, "alice")
    svc = service_token(world, org)
    got = check(world, svc, "alice", {"totp": "123456"})
    assert got.status_code == 409, got.text
    assert got.json["type"] == "/problems/mfa-not-enrolled"
    # A pending enrollment is not an enrollment either.
    user_token = world.token(org, "alice", "user")
    started = world.call("POST", "/v1/me/mfa/enrollment", user_token)
    assert started.status_code == 201
    assert check(world, svc, "alice", {"totp": "123456"}).status_code == 409
    assert [(t, d["reason"]) for t, _, d in totp_events(world, org)] == [
        (EventType.TOTP_REJECTED, "mfa-not-enrolled")
    ] * 2


def test_a_user_of_another_organization_is_404_like_none(world: ApiWorld) -> None:
    theirs, _ = enrolled(world, "carol")
    org = world.org()
    svc = service_token(world, org)
    code = world.totp(theirs, "carol", offset_steps=1)
    foreign = check(world, svc, "carol", {"totp": code})
    nobody = check(world, svc, "nobody", {"totp": code})
    assert foreign.status_code == nobody.status_code == 404
    assert foreign.json == nobody.json
    for odd in ("x" * 129, "a%00b"):
        assert check(world, svc, odd, {"totp": code}).status_code == 404
    assert totp_events(world, theirs) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"totp": "12345"}, "totp"),
        ({"totp": "1234567"}, "totp"),
        ({"totp": "12345a"}, "totp"),
        ({"totp": "\uff11\uff12\uff13\uff14\uff15\uff16"}, "totp"),  # fullwidth digits: not ASCII
        ({"totp": " 123456"}, "totp"),
        ({"totp": 123456}, "totp"),
        ({}, "totp"),
        ({"totp": "123456", "client_ip": "not-an-ip"}, "client_ip"),
        ({"totp": "123456", "user_agent": "x" * 513}, "user_agent"),
        ({"totp": "123456", "code": "x"}, "code"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_costs_nothing(
    world: ApiWorld, body: Any, field: str
) -> None:
    org, svc = enrolled(world)
    got = check(world, svc, "alice", body)
    assert got.status_code == 422, got.text
    assert got.json["field"] == field
    assert standing(world, org) is None or standing(world, org) == (0, 0)


@pytest.mark.parametrize("role", ["user", "admin", "auditor"])
def test_only_the_service_role_verifies(world: ApiWorld, role: str) -> None:
    org, _ = enrolled(world)
    caller = world.token(org, "alice" if role == "user" else f"{role}-1", role)
    got = check(world, caller, "alice", {"totp": world.totp(org, offset_steps=1)})
    assert got.status_code == 403, got.text


ROUNDS, RACERS = 3, 6


def test_concurrent_requests_with_one_valid_code_accept_exactly_one(world: ApiWorld) -> None:
    """The first to take the user's row lock is accepted; each later one sees its step
    used up (a replay), so none of them is throttled either (5 failures are allowed)."""
    for round_ in range(ROUNDS):
        user = f"racer{round_}"
        org, svc = enrolled(world, user)
        body = {"totp": world.totp(org, user, offset_steps=1)}

        def attempt(
            barrier: threading.Barrier, svc: str = svc, user: str = user, body: Any = body
        ) -> Any:
            barrier.wait()
            got = check(world, svc, user, body)
            return got.status_code, got.json

        answers = run_together([attempt] * RACERS)
        accepted = [a for a in answers if a == (200, {"accepted": True, "replayed": False})]
        replayed = [a for a in answers if a == (200, {"accepted": False, "replayed": True})]
        assert len(accepted) == 1, answers
        assert len(accepted) + len(replayed) == RACERS, answers
        types = [t for t, _, _ in totp_events(world, org)]
        assert types.count(EventType.TOTP_ACCEPTED) == 1
        assert types.count(EventType.TOTP_REPLAYED) == RACERS - 1
