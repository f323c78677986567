"""Mails from a separate `mfa-codes worker -Q deliveries` process (PostgreSQL and
RabbitMQ) to a real SMTP server. A user's whole flow with mails and webhooks is
tests/e2e/test_notify_flow.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from domain.models import MailDelivery, MailStatus, User
from domain.notify.mail_rules import MailKind
from domain.notify.mail_texts import SUBJECTS
from tests.support.api_world import ApiWorld, api_world
from tests.support.builders import enroll, insert_codes
from tests.support.polling import await_true
from tests.support.processes import mfa_codes, settings_env, stop_group
from tests.support.settings import pg_amqp_settings
from tests.support.smtp import SmtpServer, smtp_server

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


def settled(world: ApiWorld, user_id: str, count: int) -> bool:
    with world.services.unit_of_work() as uow:
        statuses = list(
            uow.session.execute(
                select(MailDelivery.status).where(MailDelivery.user_id == user_id)
            ).scalars()
        )
    return len(statuses) == count and all(s == MailStatus.SENT for s in statuses)


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
