"""Mails end to end: a user's flow over HTTP with the real worker, and a separate
`mfa-codes worker -Q deliveries` process sending to a real SMTP server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from domain.models import MailDelivery, MailStatus, User
from domain.notify.mail_rules import MailKind
from domain.notify.mail_texts import SUBJECTS
from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world
from tests.support.builders import enroll, insert_codes
from tests.support.codes import CODE_RE
from tests.support.polling import await_true
from tests.support.processes import mfa_codes, settings_env, stop_group
from tests.support.settings import make_settings, pg_amqp_settings
from tests.support.smtp import SmtpServer, parts, smtp_server

PRIMARY, RECOVERY = "alice@example.com", "alice.recovery@example.net"


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with smtp_server() as started:
        yield started


def give_addresses(world: ApiWorld, org: str, external_id: str = "alice") -> str:
    with world.services.unit_of_work() as uow:
        user = uow.session.execute(
            select(User).where(User.org_id == org, User.external_id == external_id)
        ).scalar_one()
        user.email, user.recovery_email = PRIMARY, RECOVERY
        return user.id


def subjects(server: SmtpServer, address: str) -> list[str]:
    return [str(m.message["Subject"]) for m in server.inbox.to(address)]


def settled(world: ApiWorld, user_id: str, count: int) -> bool:
    with world.services.unit_of_work() as uow:
        statuses = list(
            uow.session.execute(
                select(MailDelivery.status).where(MailDelivery.user_id == user_id)
            ).scalars()
        )
    return len(statuses) == count and all(s == MailStatus.SENT for s in statuses)


def test_a_users_flow_sends_exactly_its_mails(tmp_path: Path, server: SmtpServer) -> None:
    settings = make_settings(tmp_path, MFA_SMTP_URL=server.url)
    upgrade(settings.database_url)
    with api_world(settings) as world:
        org = world.org()
        world.user(org, "alice")
        user_id = give_addresses(world, org)
        token = world.token(org, "alice", "user")
        started = world.call("POST", "/v1/me/mfa/enrollment", token)
        world.secrets[(org, "alice")] = started.json["secret"]
        confirmed = world.call(
            "POST", "/v1/me/mfa/enrollment/confirm", token, json={"totp": world.totp(org)}
        )
        assert confirmed.status_code == 201
        first = confirmed.json["regeneration"]["id"]
        world.await_status(token, first)
        codes = [
            m.group(0) for line in world.sheet_text(token, first) for m in CODE_RE.finditer(line)
        ]
        service = world.token(org, "front", "service")
        verify = world.call(
            "POST",
            "/v1/users/alice/backup-codes/verify",
            service,
            json={"code": codes[0], "client_ip": "203.0.113.50", "user_agent": "Lynx/2"},
        )
        assert verify.json["accepted"] is True
        admin = world.token(org, "root", "admin")
        revoked = world.call("POST", "/v1/users/alice/backup-codes/revocation", admin)
        assert revoked.status_code == 204
        await_true(lambda: settled(world, user_id, 8), 30, "eight mails sent")
    expected = [
        SUBJECTS[MailKind.ENROLLED],
        SUBJECTS[MailKind.CODES_GENERATED],
        SUBJECTS[MailKind.CODE_USED],
        SUBJECTS[MailKind.CODES_REVOKED],
    ]
    for address in (PRIMARY, RECOVERY):
        assert sorted(subjects(server, address)) == sorted(expected)
    assert server.inbox.count() == 8
    (used,) = [m for m in server.inbox.to(PRIMARY) if m.message["Subject"] == expected[2]]
    text = "\n".join(parts(used.message))
    assert "203.0.113.50" in text and "Lynx/2" in text and "4 backup codes remain" in text


@pytest.mark.postgres
def test_a_delivery_worker_process_sends_what_the_api_committed(
    tmp_path: Path, pg_database_url: str, amqp_url: str, server: SmtpServer
) -> None:
    settings = pg_amqp_settings(tmp_path, pg_database_url, amqp_url)
    env = settings_env(settings, MFA_SMTP_URL=server.url, MFA_MAIL_FROM="sec@mfa.example")
    log = (tmp_path / "deliveries.log").open("wb")
    proc = subprocess.Popen(
        [*mfa_codes(), "worker", "-Q", "deliveries", "--pool", "threads", "-c", "2"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with api_world(settings, worker=False) as world:
            org = world.org()
            world.user(org, "alice")
            user_id = give_addresses(world, org)
            enroll(world.services, user_id)
            insert_codes(world.services, user_id, 3)
            admin = world.token(org, "root", "admin")
            assert world.call("POST", "/v1/users/alice/mfa/unlock", admin).status_code == 204
            await_true(lambda: settled(world, user_id, 2), 60, "the worker to send both")
    finally:
        stop_group(proc)
        log.close()
    for address in (PRIMARY, RECOVERY):
        (received,) = server.inbox.to(address)
        assert received.message["Subject"] == SUBJECTS[MailKind.UNLOCKED]
        assert received.message["From"] == "sec@mfa.example"
        assert received.message["Message-ID"].endswith("@mfa.example>")
    output = (tmp_path / "deliveries.log").read_text()
    assert PRIMARY not in output and RECOVERY not in output
