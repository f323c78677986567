"""Sign-in with a backup code and administration over HTTP, on PostgreSQL with a
RabbitMQ worker: what docs/api.md promises the sign-in front end and the admin, and the
audit events each of these leaves (read back through GET /v1/audit/events)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from domain import accounts, audit, limits, outbox
from domain.audit.types import EventType, Outcome
from domain.models import OutboxMessage
from domain.slots import VerificationSlots
from infra.db import utcnow
from tests.integration.codes_fixtures import CountingHasher
from tests.support.api_world import ApiWorld, api_world
from tests.support.builders import unique
from tests.support.codes import WRONG_CODE, wrong_code
from tests.support.settings import pg_amqp_settings
from workers.app import TASK_PROCESS

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, pg_database_url: str, amqp_url: str
) -> Iterator[ApiWorld]:
    settings = pg_amqp_settings(tmp_path_factory.mktemp("signin"), pg_database_url, amqp_url)
    with api_world(settings) as w:
        yield w


@dataclass
class Holder:
    """An organization with one enrolled user whose first set of codes is known."""

    world: ApiWorld
    org: str
    user: str
    user_token: str
    service: str
    admin: str
    auditor: str
    codes: list[str]

    def verify(
        self, code: Any, user: str | None = None, client_ip: str | None = None, **kw: Any
    ) -> Any:
        path = f"/v1/users/{user or self.user}/backup-codes/verify"
        body = {"code": code} if client_ip is None else {"code": code, "client_ip": client_ip}
        return self.world.call("POST", path, self.service, body, **kw)

    def events(self, *event_types: str, user: str | None = None) -> list[dict[str, Any]]:
        query = [("limit", "1000")] + [("type", t) for t in event_types]
        if user is not None:
            query.append(("user_id", user))
        got = self.world.call(
            "GET", "/v1/audit/events", self.auditor, query_string=urlencode(query)
        )
        assert got.status_code == 200, got.text
        assert got.json["next"] is None
        return list(got.json["events"])

    def regenerate(self, offset_steps: int = 1) -> dict[str, Any]:
        """A regeneration over HTTP, awaited to its final status."""
        totp = self.world.totp(self.org, self.user, offset_steps)
        got = self.world.call(
            "POST", "/v1/me/backup-codes/regenerations", self.user_token, {"totp": totp}
        )
        assert got.status_code == 202, got.text
        return self.world.await_status(self.user_token, got.json["id"])

    def mfa(self) -> dict[str, Any]:
        got = self.world.call("GET", "/v1/me/mfa", self.user_token)
        assert got.status_code == 200, got.text
        return dict(got.json)

    def put_policy(self, enabled: bool, count: int) -> Any:
        body = {"backup_codes_enabled": enabled, "code_count": count}
        return self.world.call("PUT", "/v1/org/policy", self.admin, body)


def holder(world: ApiWorld, *, with_codes: bool = True) -> Holder:
    org = world.org()
    tok, confirmed = world.enroll(org, "alice")
    h = Holder(
        world,
        org,
        "alice",
        tok,
        world.token(org, "signin-frontend", "service"),
        world.token(org, "admin-1", "admin"),
        world.token(org, "auditor-1", "auditor"),
        [],
    )
    if with_codes:
        rid = confirmed["regeneration"]["id"]
        assert world.await_status(tok, rid)["status"] == "ready"
        h.codes = world.sheet_text(tok, rid)
        assert len(h.codes) == 5
    return h


def _problem(got: Any, status: int, slug: str) -> None:
    assert got.status_code == status, got.text
    assert got.headers["content-type"].startswith("application/problem+json")
    assert got.json["type"] == f"/problems/{slug}"


# --- accepted true / false ------------------------------------------------------------


def test_a_right_code_is_accepted_once_then_refused(world: ApiWorld) -> None:
    h = holder(world)
    first = h.verify(h.codes[0], headers={"X-Request-Id": "signin-ok-1"})
    again = h.verify(h.codes[0])
    assert first.status_code == again.status_code == 200
    assert first.json == {"accepted": True, "mistyped": False, "remaining": 4, "low": False}
    assert again.json == {"accepted": False, "mistyped": False, "remaining": 4, "low": False}
    assert first.headers["cache-control"] == "no-store"
    accepted = h.events(EventType.CODE_ACCEPTED)
    assert [(e["request_id"], e["details"]["remaining"]) for e in accepted] == [("signin-ok-1", 4)]
    assert accepted[0]["actor"]["role"] == "service"
    [rejected] = h.events(EventType.CODE_REJECTED)
    assert rejected["details"]["reason"] == "spent"  # a double submit, not a failure
    assert h.mfa()["limits"] == {
        "totp_throttled_until": None,
        "totp_locked": False,
        "backup_codes_locked": False,
    }


def test_low_turns_true_when_two_or_fewer_codes_remain(world: ApiWorld) -> None:
    h = holder(world)
    answers = [h.verify(code).json for code in h.codes]
    assert answers == [
        {"accepted": True, "mistyped": False, "remaining": 4, "low": False},
        {"accepted": True, "mistyped": False, "remaining": 3, "low": False},
        {"accepted": True, "mistyped": False, "remaining": 2, "low": True},
        {"accepted": True, "mistyped": False, "remaining": 1, "low": True},
        {"accepted": True, "mistyped": False, "remaining": 0, "low": True},
    ]
    current = h.mfa()["backup_codes"]
    assert (current["remaining"], current["total"], current["low"]) == (0, 5, True)


def test_a_wrong_code_is_refused_with_the_count_of_codes_left(world: ApiWorld) -> None:
    h = holder(world)
    wrong = WRONG_CODE  # well formed: judged by its hash, not mistyped
    got = h.verify(wrong)
    assert got.status_code == 200, got.text
    assert got.json == {"accepted": False, "mistyped": False, "remaining": 5, "low": False}
    wrong_check = h.codes[0][:-1] + ("0" if h.codes[0][-1] != "0" else "1")
    for attempt in ("not a code", "", "\u017f" + h.codes[0][1:], wrong_check):
        got = h.verify(attempt)
        assert got.status_code == 200, got.text
        assert got.json == {"accepted": False, "mistyped": True, "remaining": 5, "low": False}
    rejected = h.events(EventType.CODE_REJECTED)
    # the wrong code, and the first mistyped input of this minute with its count
    assert [e["details"].get("reason") for e in rejected] == [None, "mistyped"]
    assert rejected[1]["details"]["count"] == 1
    assert all(e["outcome"] == Outcome.FAILURE for e in rejected)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda c: c.replace("-", ""), id="no-separator"),
        pytest.param(str.lower, id="lowercase"),
        pytest.param(lambda c: f"  {c}  ", id="surrounding-spaces"),
        pytest.param(lambda c: f"\t{c.replace('-', ' ').lower()}\n", id="spaces-lower-tab"),
        pytest.param(lambda c: c[:7].lower() + c[7:], id="mixed-case"),
    ],
)
def test_codes_are_normalised_before_checking(world: ApiWorld, form: Any) -> None:
    h = holder(world)
    got = h.verify(form(h.codes[2]))
    assert got.json == {"accepted": True, "mistyped": False, "remaining": 4, "low": False}
    assert h.verify(h.codes[2]).json["accepted"] is False  # spent, in its printed form too


def test_codes_of_a_replaced_set_are_refused_and_the_new_ones_accepted(world: ApiWorld) -> None:
    h = holder(world)
    done = h.regenerate()
    assert done["status"] == "ready", done
    fresh = world.sheet_text(h.user_token, done["id"])
    assert h.verify(h.codes[0]).json == {
        "accepted": False,
        "mistyped": False,
        "remaining": 5,
        "low": False,
    }
    assert h.verify(fresh[0]).json == {
        "accepted": True,
        "mistyped": False,
        "remaining": 4,
        "low": False,
    }


# --- attempt limits ------------------------------------------------------------------------

A, B = "198.51.100.20", "203.0.113.20"


def test_five_failures_from_one_source_throttle_it_and_no_other(world: ApiWorld) -> None:
    h = holder(world)
    for n in range(5):
        got = h.verify(wrong_code(n), client_ip=A)
        assert got.status_code == 200 and got.json["accepted"] is False, got.text
    sixth = h.verify(wrong_code(9), client_ip=A)
    _problem(sixth, 429, "too-many-attempts")
    retry = int(sixth.headers["retry-after"])
    assert 0 < retry <= world.settings.lockout_window_seconds
    right = h.verify(h.codes[0], client_ip=A)
    _problem(right, 429, "too-many-attempts")
    assert int(right.headers["retry-after"]) <= retry
    # The refused right code was not spent; from another source it signs in.
    assert h.mfa()["backup_codes"]["remaining"] == 5
    other = h.verify(h.codes[0], client_ip=B)
    assert other.json == {"accepted": True, "mistyped": False, "remaining": 4, "low": False}
    assert h.events(EventType.LOCKOUT_STARTED) == []  # one source is not the user
    refusals = h.events(EventType.SIGNIN_REFUSED)
    assert [e["details"]["reason"] for e in refusals] == ["too-many-attempts"] * 2
    rejected = h.events(EventType.CODE_REJECTED)
    assert {e["details"]["client_ip"] for e in rejected} == {A}


def test_wrong_backup_codes_never_block_the_users_regeneration(world: ApiWorld) -> None:
    h = holder(world)
    for n in range(5):  # a stranger who knows the user id, from one address
        h.verify(wrong_code(n))
    assert h.verify(h.codes[0]).status_code == 429
    done = h.regenerate()
    assert done["status"] == "ready", done
    assert h.mfa()["limits"]["totp_throttled_until"] is None


def _lock_backup_codes(world: ApiWorld, h: Holder) -> None:
    """100 consecutive failures, written as the limits count them (at HTTP speed the
    hourly budget would make this take five hours)."""
    with world.services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, h.org, h.user))
        start = utcnow() - timedelta(hours=6)
        for i in range(100):
            at = start + timedelta(hours=i // 20, minutes=2 * (i % 20))
            ip = f"192.0.2.{i % 5 + 1}"
            limits.record_failure(
                uow, user, limits.BACKUP_CODES, ip, at, audit.SYSTEM, world.services.limits
            )


def test_a_hundred_consecutive_failures_lock_until_an_admin_unlocks(world: ApiWorld) -> None:
    h = holder(world)
    _lock_backup_codes(world, h)
    locked = h.verify(h.codes[0], client_ip=B)
    _problem(locked, 429, "backup-codes-locked")
    assert "retry-after" not in locked.headers
    assert h.mfa()["limits"] == {
        "totp_throttled_until": None,
        "totp_locked": False,
        "backup_codes_locked": True,
    }
    [permanent] = h.events(EventType.LOCKOUT_PERMANENT)
    assert permanent["details"] == {"factor": "backup_codes", "failures": 100}
    # the help desk unlocks; nothing else changes
    unlocked = world.call("POST", f"/v1/users/{h.user}/mfa/unlock", h.admin)
    assert unlocked.status_code == 204, unlocked.text
    [cleared] = h.events(EventType.LOCKOUT_CLEARED)
    assert (cleared["details"], cleared["actor"]["role"]) == (
        {"factors": ["backup_codes"]},
        "admin",
    )
    assert h.mfa()["limits"]["backup_codes_locked"] is False
    assert h.verify(h.codes[0], client_ip=B).json["accepted"] is True


def test_a_new_set_ends_a_backup_code_lock(world: ApiWorld) -> None:
    h = holder(world)
    _lock_backup_codes(world, h)
    done = h.regenerate()
    assert done["status"] == "ready", done
    fresh = world.sheet_text(h.user_token, done["id"])
    assert h.verify(fresh[0]).json["accepted"] is True


def test_unknown_user_is_404_without_a_hash(world: ApiWorld) -> None:
    h = holder(world)
    real = world.services.hasher
    hasher = CountingHasher(world.settings)
    world.services.hasher = hasher
    try:
        for _ in range(3):
            _problem(h.verify(h.codes[0], user=unique("nobody")), 404, "not-found")
        assert hasher.verifications == 0
        assert h.verify(WRONG_CODE).status_code == 200
        assert hasher.verifications == 1  # the counter counts: a real attempt costs one
    finally:
        world.services.hasher = real


def test_a_verification_waits_for_a_slot_then_answers_503_busy(world: ApiWorld) -> None:
    h = holder(world)
    real = world.services.slots
    world.services.slots = VerificationSlots(1, 0.3)
    try:
        with world.services.slots.held():  # the one slot is taken
            started = time.monotonic()
            busy = h.verify(h.codes[0])
            waited = time.monotonic() - started
        _problem(busy, 503, "busy")
        assert int(busy.headers["retry-after"]) >= 1
        assert waited >= 0.3
        # nothing was spent or counted; with the slot free the code signs in
        assert h.verify(h.codes[0]).json["accepted"] is True
    finally:
        world.services.slots = real


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"client_ip": "not an address"}, "client_ip"),
        ({"client_ip": "1.2.3.4.5"}, "client_ip"),
        ({"user_agent": "x" * 513}, "user_agent"),
        ({"user_agent": 7}, "user_agent"),
    ],
)
def test_client_ip_and_user_agent_are_checked(world: ApiWorld, extra: Any, field: str) -> None:
    h = holder(world)
    body = {"code": h.codes[0], **extra}
    got = world.call("POST", f"/v1/users/{h.user}/backup-codes/verify", h.service, body)
    _problem(got, 422, "invalid-request")
    assert got.json["field"] == field
    assert h.mfa()["backup_codes"]["remaining"] == 5


def test_an_admin_reset_ends_the_lockout(world: ApiWorld) -> None:
    h = holder(world)
    for n in range(5):
        h.verify(wrong_code(n))
    assert h.verify(h.codes[0]).status_code == 429
    assert world.call("DELETE", f"/v1/users/{h.user}/mfa", h.admin).status_code == 204
    # The reset revoked the user's token; the application signs the user in again.
    _problem(world.call("GET", "/v1/me/mfa", h.user_token), 401, "unauthenticated")
    h.user_token = world.token(h.org, h.user, "user")
    # Enrolled again from scratch, the user signs in with the new set.
    again = world.call("POST", "/v1/me/mfa/enrollment", h.user_token)
    assert again.status_code == 201, again.text
    world.secrets[(h.org, h.user)] = again.json["secret"]
    confirmed = world.call(
        "POST",
        "/v1/me/mfa/enrollment/confirm",
        h.user_token,
        {"totp": world.totp(h.org, h.user)},
    )
    assert confirmed.status_code == 201, confirmed.text
    rid = confirmed.json["regeneration"]["id"]
    assert world.await_status(h.user_token, rid)["status"] == "ready"
    codes = world.sheet_text(h.user_token, rid)
    assert h.verify(codes[0]).json == {
        "accepted": True,
        "mistyped": False,
        "remaining": 4,
        "low": False,
    }


# --- refusals: policy, enrollment, other organizations ----------------------------------


def test_policy_off_refuses_sign_in_and_intake_at_once(world: ApiWorld) -> None:
    h = holder(world)
    assert h.put_policy(False, 5).status_code == 200
    _problem(h.verify(h.codes[0]), 403, "backup-codes-disabled")
    intake = world.call(
        "POST",
        "/v1/me/backup-codes/regenerations",
        h.user_token,
        {"totp": world.totp(h.org, h.user, 1)},
    )
    _problem(intake, 403, "backup-codes-disabled")
    assert h.mfa()["backup_codes_enabled"] is False
    refused = h.events(EventType.SIGNIN_REFUSED)
    assert [e["details"]["reason"] for e in refused] == ["backup-codes-disabled"]
    assert len(h.events(EventType.REGENERATION_REFUSED)) == 1
    # Off is a refusal, not a deletion: on again, the same code signs in.
    assert h.put_policy(True, 5).status_code == 200
    assert h.verify(h.codes[0]).json == {
        "accepted": True,
        "mistyped": False,
        "remaining": 4,
        "low": False,
    }


def test_policy_off_fails_a_regeneration_already_queued(world: ApiWorld) -> None:
    """The request waits unpublished (as in a broker outage or a backlog) while the
    policy goes off; the worker then judges it under the policy of that moment.

    The module's worker does the processing: a second start_worker in this process
    would end the first one too (celery.contrib.testing sets the process-wide
    `worker.state.should_terminate` when any worker thread stops)."""
    h = holder(world)
    world.publisher.uninstall()
    try:
        got = world.call(
            "POST",
            "/v1/me/backup-codes/regenerations",
            h.user_token,
            {"totp": world.totp(h.org, h.user, 1)},
        )
        assert got.status_code == 202, got.text
        rid = got.json["id"]
        assert h.put_policy(False, 5).status_code == 200
    finally:
        world.publisher.install()
    assert world.call("GET", got.headers["location"], h.user_token).json["status"] == "queued"
    _publish_pending(world, rid)
    done = world.await_status(h.user_token, rid)
    assert (done["status"], done["failure"]) == ("failed", "backup-codes-disabled")
    sheet = world.call("GET", f"/v1/me/backup-codes/regenerations/{rid}/sheet", h.user_token)
    _problem(sheet, 409, "regeneration-failed")
    failed = h.events(EventType.REGENERATION_FAILED)
    assert [(e["details"]["regeneration_id"], e["details"]["reason"]) for e in failed] == [
        (rid, "backup-codes-disabled")
    ]
    # The set in use was not replaced by the refused regeneration.
    assert h.mfa()["backup_codes"]["remaining"] == 5


def _publish_pending(world: ApiWorld, rid: str) -> None:
    """Publish the one outbox row of `rid` (others in the shared database are left be)."""
    with world.services.unit_of_work() as uow:
        rows = uow.session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.published_at.is_(None), OutboxMessage.task == TASK_PROCESS)
            .order_by(OutboxMessage.id.desc())
            .limit(100)
        ).scalars()
        mine = [r for r in rows if r.args.get("regeneration_id") == rid]
        assert len(mine) == 1, "the request left no pending outbox row"
        world.publisher.publish(TASK_PROCESS, mine[0].args)
        outbox.mark_published(uow.session, [mine[0].id], utcnow())


def test_a_user_who_never_enrolled_is_409(world: ApiWorld) -> None:
    h = holder(world, with_codes=False)
    world.user(h.org, "bob")
    _problem(h.verify("0000-0000-0000", user="bob"), 409, "mfa-not-enrolled")
    refused = h.events(EventType.SIGNIN_REFUSED, user="bob")
    assert [e["details"]["reason"] for e in refused] == ["mfa-not-enrolled"]


def test_another_organizations_user_and_nobody_get_the_same_404(world: ApiWorld) -> None:
    h = holder(world)
    other = holder(world)  # "alice" exists there too; "carol" only there
    world.user(other.org, "carol")
    theirs = h.verify(other.codes[0], user="carol")
    nobody = h.verify(other.codes[0], user=unique("nobody"))
    _problem(theirs, 404, "not-found")
    assert theirs.json == nobody.json
    assert theirs.headers.get("retry-after") is None
    # The foreign user's code was neither spent nor counted as a failure in either org.
    assert other.verify(other.codes[0]).json["accepted"] is True
    assert other.events(EventType.CODE_REJECTED, user="carol") == []
    assert h.events(EventType.CODE_REJECTED) == []


# --- administration ------------------------------------------------------------------------


def test_code_count_applies_to_the_next_generation(world: ApiWorld) -> None:
    h = holder(world)
    got = h.put_policy(True, 8)
    assert got.status_code == 200 and got.json == {
        "backup_codes_enabled": True,
        "code_count": 8,
        "notify_users": True,
        "support_contact": None,
    }
    assert world.call("GET", "/v1/org/policy", h.admin).json["code_count"] == 8
    assert h.mfa()["backup_codes"]["total"] == 5  # the current set keeps its size
    done = h.regenerate()
    assert (done["status"], done["code_count"]) == ("ready", 8)
    assert len(world.sheet_text(h.user_token, done["id"])) == 8
    current = h.mfa()["backup_codes"]
    assert (current["total"], current["remaining"]) == (8, 8)
    changed = h.events(EventType.POLICY_CHANGED)
    assert changed[-1]["details"] == {
        "old": {
            "backup_codes_enabled": True,
            "code_count": 5,
            "notify_users": True,
            "support_contact": None,
        },
        "new": {
            "backup_codes_enabled": True,
            "code_count": 8,
            "notify_users": True,
            "support_contact": None,
        },
    }
    assert changed[-1]["actor"]["principal_id"] == "admin-1"


def test_revocation_deactivates_every_code(world: ApiWorld) -> None:
    h = holder(world)
    assert h.verify(h.codes[0]).json["accepted"] is True
    got = world.call("POST", f"/v1/users/{h.user}/backup-codes/revocation", h.admin)
    assert got.status_code == 204 and got.text == ""
    assert h.verify(h.codes[1]).json == {
        "accepted": False,
        "mistyped": False,
        "remaining": 0,
        "low": True,
    }
    assert h.mfa()["backup_codes"] is None
    assert h.mfa()["enrolled"] is True  # only the codes went
    revoked = h.events(EventType.CODES_REVOKED)
    assert [e["details"] for e in revoked] == [{"count": 4}]
    # A regeneration gives the user working codes again.
    done = h.regenerate()
    fresh = world.sheet_text(h.user_token, done["id"])
    assert h.verify(fresh[0]).json["accepted"] is True


def test_deleting_mfa_removes_the_enrollment_and_every_code(world: ApiWorld) -> None:
    h = holder(world)
    got = world.call("DELETE", f"/v1/users/{h.user}/mfa", h.admin)
    assert got.status_code == 204 and got.text == ""
    _problem(world.call("GET", "/v1/me/mfa", h.user_token), 401, "unauthenticated")
    h.user_token = world.token(h.org, h.user, "user")  # signed in again
    status = h.mfa()
    assert (status["enrolled"], status["backup_codes"]) == (False, None)
    _problem(h.verify(h.codes[0]), 409, "mfa-not-enrolled")
    intake = world.call(
        "POST",
        "/v1/me/backup-codes/regenerations",
        h.user_token,
        {"totp": world.totp(h.org, h.user, 1)},
    )
    _problem(intake, 409, "mfa-not-enrolled")
    reset = h.events(EventType.MFA_RESET)
    assert len(reset) == 1
    assert reset[0]["details"]["was_enrolled"] is True
    assert reset[0]["details"]["codes_removed"] == 5


@pytest.mark.parametrize("path", ["/backup-codes/revocation", "/mfa", "/mfa/unlock"])
def test_admin_actions_on_another_organizations_user_are_404(world: ApiWorld, path: str) -> None:
    h = holder(world)
    other = holder(world)
    world.user(other.org, "carol")
    method = "DELETE" if path == "/mfa" else "POST"
    theirs = world.call(method, f"/v1/users/carol{path}", h.admin)
    nobody = world.call(method, f"/v1/users/{unique('nobody')}{path}", h.admin)
    _problem(theirs, 404, "not-found")
    assert theirs.json == nobody.json
    assert other.mfa()["backup_codes"]["remaining"] == 5


USER_PATHS = [
    ("POST", "/v1/users/{}/backup-codes/verify", "service", {"code": "0000-0000-0000"}),
    ("POST", "/v1/users/{}/backup-codes/revocation", "admin", None),
    ("DELETE", "/v1/users/{}/mfa", "admin", None),
    ("POST", "/v1/users/{}/mfa/unlock", "admin", None),
]


@pytest.mark.parametrize(("method", "template", "role", "body"), USER_PATHS)
@pytest.mark.parametrize("impossible", ["%00", "alice%00", "a" * 129, "%C3%A9", "%FF"])
def test_a_user_id_no_user_can_have_is_the_404_of_nobody(
    world: ApiWorld, method: str, template: str, role: str, body: Any, impossible: str
) -> None:
    """A NUL reached PostgreSQL as a text parameter and answered 500."""
    h = holder(world, with_codes=False)
    token = h.service if role == "service" else h.admin
    got = world.call(method, template.format(impossible), token, body)
    nobody = world.call(method, template.format(unique("nobody")), token, body)
    _problem(got, 404, "not-found")
    assert got.json == nobody.json


def test_get_policy_answers_the_default(world: ApiWorld) -> None:
    h = holder(world, with_codes=False)
    got = world.call("GET", "/v1/org/policy", h.admin)
    assert got.status_code == 200
    assert got.json == {
        "backup_codes_enabled": True,
        "code_count": 5,
        "notify_users": True,
        "support_contact": None,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"backup_codes_enabled": True, "code_count": 0}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": 21}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": -1}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": "5"}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": 5.0}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": 5.5}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": True}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": None}, "code_count"),
        ({"backup_codes_enabled": True}, "code_count"),
        ({"code_count": 5}, "backup_codes_enabled"),
        ({"backup_codes_enabled": "yes", "code_count": 5}, "backup_codes_enabled"),
        ({"backup_codes_enabled": 1, "code_count": 5}, "backup_codes_enabled"),
        ({"backup_codes_enabled": True, "code_count": 5, "colour": "red"}, "colour"),
        ([{"backup_codes_enabled": True, "code_count": 5}], "body"),
    ],
)
def test_put_policy_refuses_invalid_bodies_naming_the_field(
    world: ApiWorld, body: Any, field: str
) -> None:
    h = holder(world, with_codes=False)
    got = world.call("PUT", "/v1/org/policy", h.admin, body)
    _problem(got, 422, "invalid-request")
    assert got.json["field"] == field
    assert world.call("GET", "/v1/org/policy", h.admin).json == {
        "backup_codes_enabled": True,
        "code_count": 5,
        "notify_users": True,
        "support_contact": None,
    }
    assert h.events(EventType.POLICY_CHANGED) == []


@pytest.mark.parametrize("raw", [b"", b"{", b"code_count=5", b"\xff\xfe"])
def test_put_policy_refuses_a_body_that_is_no_json_object(world: ApiWorld, raw: bytes) -> None:
    h = holder(world, with_codes=False)
    got = world.call(
        "PUT",
        "/v1/org/policy",
        h.admin,
        body=raw,
        headers={"Content-Type": "application/json"},
    )
    assert got.status_code in (400, 422), got.text
    assert got.json["type"] == "/problems/invalid-request"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "code"),
        ({"code": 12345}, "code"),
        ({"code": None}, "code"),
        ({"code": "0000-0000-0000", "user": "x"}, "user"),
        (["0000-0000-0000"], "body"),
    ],
)
def test_verify_refuses_invalid_bodies_naming_the_field(
    world: ApiWorld, body: Any, field: str
) -> None:
    h = holder(world, with_codes=False)
    got = h.world.call("POST", f"/v1/users/{h.user}/backup-codes/verify", h.service, body)
    _problem(got, 422, "invalid-request")
    assert got.json["field"] == field
    assert h.events(EventType.CODE_REJECTED) == []  # not an attempt: nothing counted


def test_no_event_ever_holds_a_code(world: ApiWorld) -> None:
    h = holder(world)
    h.verify(h.codes[0])
    h.verify(h.codes[1].lower())
    h.verify(WRONG_CODE)
    world.call("POST", f"/v1/users/{h.user}/backup-codes/revocation", h.admin)
    trail = json.dumps(h.events()).upper()
    for code in h.codes:
        assert code not in trail and code.replace("-", "") not in trail
