"""Tokens expire and can be revoked; an MFA reset revokes the user's tokens, so a
stolen token cannot enroll the attacker's authenticator after the help desk reset
(issue 10, point 3). Over the API on SQLite and on PostgreSQL with RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from falcon import testing
from sqlalchemy import select

from domain import audit, tokens
from domain.audit.types import EventType
from domain.models import ApiToken, AuditEvent
from tests.support.api_world import ApiWorld, world_on

ENROLL = "/v1/me/mfa/enrollment"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorld]:
    with world_on(request, tmp_path_factory, "tokens") as built:
        yield built


def issue(
    world: ApiWorld,
    org: str,
    principal: str,
    role: str,
    ttl: timedelta | None = None,
    now: datetime | None = None,
) -> tuple[str, str]:
    with world.services.unit_of_work() as uow:
        row, plaintext = tokens.issue(uow, org, principal, role, audit.CLI, ttl=ttl, now=now)
        return row.id, plaintext


def events_of(world: ApiWorld, org: str, type_: str) -> list[AuditEvent]:
    with world.services.unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.org_id == org, AuditEvent.type == type_)
                .order_by(AuditEvent.seq)
            )
        )


def assert_unauthenticated(got: testing.Result) -> None:
    assert got.status_code == 401, got.text
    assert got.json["type"] == "/problems/unauthenticated"
    assert got.headers["WWW-Authenticate"] == "Bearer"


def test_an_expired_token_is_401(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    issued_at = datetime.now(UTC) - timedelta(seconds=61)
    _, expired = issue(world, org, "alice", "user", ttl=timedelta(seconds=60), now=issued_at)
    _, live = issue(world, org, "alice", "user", ttl=timedelta(seconds=60))
    assert_unauthenticated(world.call("GET", "/v1/me/mfa", expired))
    assert world.call("GET", "/v1/me/mfa", live).status_code == 200


def test_a_revoked_token_is_401_from_the_next_request_on(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    token_id, tok = issue(world, org, "alice", "user")
    assert world.call("GET", "/v1/me/mfa", tok).status_code == 200
    with world.services.unit_of_work() as uow:
        tokens.revoke(uow, token_id, audit.CLI)
    assert_unauthenticated(world.call("GET", "/v1/me/mfa", tok))
    [revoked] = events_of(world, org, EventType.TOKEN_REVOKED)
    assert revoked.details["revoked_token_id"] == token_id
    assert (revoked.actor_principal_id, revoked.actor_role) == ("cli", "operator")
    # Revoking again changes nothing and appends nothing.
    with world.services.unit_of_work() as uow:
        tokens.revoke(uow, token_id, audit.CLI)
    assert len(events_of(world, org, EventType.TOKEN_REVOKED)) == 1


def test_a_stolen_token_cannot_enroll_after_the_help_desk_resets_mfa(world: ApiWorld) -> None:
    """The attack of issue 10, point 3: the help desk resets the victim's MFA after a
    suspected compromise; the attacker's copy of the victim's token must be dead."""
    org = world.org()
    stolen, _ = world.enroll(org, "victim")
    _, admin = issue(world, org, "helpdesk", "admin")
    with world.services.unit_of_work() as uow:
        victim_token_ids = set(
            uow.session.scalars(select(ApiToken.id).where(ApiToken.principal_id == "victim"))
        )

    reset = world.call("DELETE", "/v1/users/victim/mfa", admin)
    assert reset.status_code == 204, reset.text

    # The attacker tries to enroll their own authenticator with the stolen token.
    assert_unauthenticated(world.call("POST", ENROLL, stolen))
    # The real user, signed in again by the application, enrolls: no 409 already-enrolled.
    _, fresh = issue(world, org, "victim", "user")
    started = world.call("POST", ENROLL, fresh)
    assert started.status_code == 201, started.text
    totp = pyotp.TOTP(started.json["secret"]).now()
    confirmed = world.call("POST", f"{ENROLL}/confirm", fresh, json={"totp": totp})
    assert confirmed.status_code == 201, confirmed.text

    revoked = events_of(world, org, EventType.TOKEN_REVOKED)
    assert {e.details["revoked_token_id"] for e in revoked} == victim_token_ids
    assert {(e.actor_principal_id, e.actor_role, e.user_id) for e in revoked} == {
        ("helpdesk", "admin", "victim")
    }
    assert {e.details["reason"] for e in revoked} == {"mfa.reset"}
    [reset_event] = events_of(world, org, EventType.MFA_RESET)
    assert reset_event.details["tokens_revoked"] == len(victim_token_ids)
    # Other principals' tokens are untouched.
    assert world.call("GET", "/v1/org/policy", admin).status_code == 200


def test_listing_shows_revoked_and_expired_tokens_but_never_a_token(world: ApiWorld) -> None:
    org = world.org()
    world.user(org)
    kept, kept_plain = issue(world, org, "alice", "user", ttl=timedelta(hours=1))
    gone, _ = issue(world, org, "frontend", "service")
    with world.services.unit_of_work() as uow:
        tokens.revoke(uow, gone, audit.CLI)
    with world.services.unit_of_work() as uow:
        listed = tokens.list_tokens(uow.session, org)
        live = tokens.list_tokens(uow.session, org, include_revoked=False)
    assert [t.token_id for t in listed] == [gone, kept]  # newest first
    assert listed[0].revoked_at is not None and listed[1].expires_at is not None
    assert [t.token_id for t in live] == [kept]
    assert kept_plain not in repr(listed)
