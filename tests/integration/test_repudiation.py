"""The "If this wasn't you" link over HTTP: the page changes nothing, the POST
locks the user out of what an attacker may hold, a ticket works once for 7 days,
a source gets 10 requests a minute, and the ticket never reaches a log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from falcon import testing
from sqlalchemy import select, update

from domain import limits
from domain.audit.types import EventType
from domain.clock import utcnow
from domain.models import AuditEvent, BackupCode, MailDelivery, RepudiationTicket, User
from domain.notify.repudiation import digest
from infra.migrate import upgrade
from tests.integration.mail_helpers import LINK, PRIMARY, append, person, send_all, smtp_of
from tests.support.api_world import ApiWorld, api_world
from tests.support.builders import enroll, insert_codes
from tests.support.settings import make_settings
from tests.support.smtp import parts, smtp_server
from tests.support.throttling import in_one_window


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path, MFA_PUBLIC_URL="https://mfa.example")
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as built:
        yield built


def ticket_for(world: ApiWorld, *, notify: bool = True) -> tuple[str, str, str, str]:
    """(org, user id, ticket, a user token) after a code-used mail went out."""
    svc = world.services
    org_id, user_id = person(svc, recovery=None, notify=True)
    enroll(svc, user_id)
    insert_codes(svc, user_id, 3)
    token = world.token(org_id, "alice", "user")
    append(svc, org_id, EventType.CODE_ACCEPTED, {"remaining": 2, "set_id": "K"})
    with smtp_server() as server:
        send_all(svc, smtp_of(server), user_id)
        (received,) = server.inbox.messages
    (ticket,) = set(LINK.findall("\n".join(parts(received.message))))
    assert f"https://mfa.example/v1/repudiations/{ticket}" in "\n".join(parts(received.message))
    if not notify:
        with svc.unit_of_work() as uow:
            from domain.models import Organization

            org = uow.session.get(Organization, org_id)
            assert org is not None
            org.notify_users = False
    return org_id, user_id, ticket, token


def active_codes(world: ApiWorld, user_id: str) -> int:
    with world.services.unit_of_work() as uow:
        return len(
            uow.session.execute(
                select(BackupCode).where(
                    BackupCode.user_id == user_id, BackupCode.deactivated_at.is_(None)
                )
            ).all()
        )


def totp_locked(world: ApiWorld, user_id: str) -> bool:
    with world.services.unit_of_work() as uow:
        user = uow.session.get(User, user_id)
        assert user is not None
        state = limits.standing(uow.session, user, limits.TOTP)
        return state is not None and state.locked_at is not None


def test_the_ticket_is_long_random_and_stored_only_as_its_hash(world: ApiWorld) -> None:
    _, user_id, ticket, _ = ticket_for(world)
    assert len(ticket) >= 43  # 256 bits in url-safe base64
    with world.services.unit_of_work() as uow:
        (row,) = uow.session.execute(
            select(RepudiationTicket).where(RepudiationTicket.user_id == user_id)
        ).scalars()
        assert row.ticket_hash == digest(ticket) and ticket not in row.ticket_hash
        assert row.expires_at - row.created_at == timedelta(days=7)
        mail_rows = uow.session.execute(select(MailDelivery.ticket_ciphertext)).scalars().all()
    assert mail_rows == [None]  # the encrypted copy went with the sent mail


def test_the_page_explains_asks_and_changes_nothing(world: ApiWorld) -> None:
    _, user_id, ticket, token = ticket_for(world)
    for _ in range(2):
        page = world.call("GET", f"/v1/repudiations/{ticket}")
        assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and "<script" not in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "style-src 'sha256-" in csp and "unsafe-inline" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert active_codes(world, user_id) == 3
    assert not totp_locked(world, user_id)
    assert world.call("GET", "/v1/me/mfa", token).status_code == 200


def test_confirming_locks_everything_tells_the_user_and_is_audited(world: ApiWorld) -> None:
    org_id, user_id, ticket, token = ticket_for(world, notify=False)
    done = world.call(
        "POST",
        f"/v1/repudiations/{ticket}",
        body="",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200 and done.headers["content-type"].startswith("text/html")
    assert active_codes(world, user_id) == 0
    assert totp_locked(world, user_id)
    assert world.call("GET", "/v1/me/mfa", token).status_code == 401  # token revoked
    with world.services.unit_of_work() as uow:
        (event,) = uow.session.execute(
            select(AuditEvent).where(
                AuditEvent.org_id == org_id, AuditEvent.type == EventType.USER_REPUDIATED
            )
        ).scalars()
        assert event.details["codes_deactivated"] == 3
        assert event.details["tokens_revoked"] == 1
        assert ticket not in str(event.details) and ticket not in (event.request_id or "")
        kinds = uow.session.execute(
            select(MailDelivery.kind).where(MailDelivery.user_id == user_id)
        ).scalars()
        assert "repudiated" in list(kinds)  # told, although notify_users is off
    with smtp_server() as server:
        send_all(world.services, smtp_of(server), user_id)
        (told,) = server.inbox.to(PRIMARY)
    assert "locked until an administrator resets" in "\n".join(parts(told.message))


def test_an_unlock_keeps_the_authenticator_locked_and_only_a_reset_lifts_it(
    world: ApiWorld,
) -> None:
    org_id, user_id, ticket, _ = ticket_for(world)
    assert world.call("POST", f"/v1/repudiations/{ticket}").status_code == 200
    admin = world.token(org_id, "help-desk", "admin")
    assert world.call("POST", "/v1/users/alice/mfa/unlock", admin).status_code == 204
    assert totp_locked(world, user_id)  # whoever caused the event may hold the authenticator
    assert world.call("DELETE", "/v1/users/alice/mfa", admin).status_code == 204
    assert not totp_locked(world, user_id)
    enroll(world.services, user_id, at=datetime.now(UTC))  # enrolled again: unlock unlocks
    assert world.call("POST", "/v1/users/alice/mfa/unlock", admin).status_code == 204
    assert not totp_locked(world, user_id)


def test_a_used_ticket_is_gone(world: ApiWorld) -> None:
    _, _, ticket, _ = ticket_for(world)
    first = world.call("POST", f"/v1/repudiations/{ticket}", headers={"Accept": "application/json"})
    assert first.status_code == 204
    for method in ("GET", "POST"):
        again = world.call(method, f"/v1/repudiations/{ticket}")
        assert again.status_code == 410
        assert again.json["type"] == "/problems/ticket-gone"


def test_an_expired_or_unknown_ticket_is_gone_and_changes_nothing(world: ApiWorld) -> None:
    _, user_id, ticket, _ = ticket_for(world)
    with world.services.unit_of_work() as uow:
        uow.session.execute(
            update(RepudiationTicket).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    for path in (f"/v1/repudiations/{ticket}", "/v1/repudiations/not-a-ticket"):
        assert world.call("POST", path).status_code == 410
    assert active_codes(world, user_id) == 3 and not totp_locked(world, user_id)


def test_a_source_gets_ten_requests_a_minute(world: ApiWorld) -> None:
    def run(source: str) -> tuple[list[int], testing.Result]:
        answers = [
            world.call("GET", "/v1/repudiations/guess", remote_addr=source).status_code
            for _ in range(12)
        ]
        return answers, world.call("POST", "/v1/repudiations/guess", remote_addr=source)

    answers, throttled = in_one_window(run)
    assert answers[:10] == [410] * 10
    assert answers[10:] == [429, 429]
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1


def test_the_ticket_never_reaches_a_log(world: ApiWorld, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, _, ticket, _ = ticket_for(world)
    world.call("GET", f"/v1/repudiations/{ticket}")
    world.call("POST", f"/v1/repudiations/{ticket}")
    world.call("POST", f"/v1/repudiations/{ticket}")  # 410
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert ticket not in logged


def test_a_browser_is_shown_a_page_for_a_gone_ticket_and_a_client_the_problem(
    world: ApiWorld,
) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = world.call("GET", "/v1/repudiations/used-or-expired", headers=browser)
    assert page.status_code == 410
    assert page.headers["content-type"].startswith("text/html")
    assert "no longer works" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for accept in ("*/*", "application/json", "application/problem+json"):
        got = world.call("POST", "/v1/repudiations/used", headers={"Accept": accept})
        assert got.status_code == 410 and got.json["type"] == "/problems/ticket-gone"
