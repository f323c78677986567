"""A delivery worker SIGKILLed while the SMTP server holds its mail: nothing is
lost, and the mail sent again is recognisably the same (one Message-ID)."""

from __future__ import annotations

import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from domain.clock import utcnow
from domain.models import MailDelivery, MailStatus, User
from tests.support.api_world import api_world
from tests.support.polling import await_true
from tests.support.processes import mfa_codes, settings_env, stop_group
from tests.support.settings import pg_amqp_settings
from tests.support.smtp import smtp_server
from workers.tasks import _republish_due_mails

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def _worker(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*mfa_codes(), "worker", "-Q", "deliveries", "--pool", "prefork", "-c", "1"],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_a_worker_killed_mid_send_loses_nothing_and_resends_the_same_mail(
    tmp_path: Path, pg_database_url: str, amqp_url: str
) -> None:
    settings = pg_amqp_settings(tmp_path, pg_database_url, amqp_url)
    with smtp_server() as server, api_world(settings, worker=False) as world:
        env = settings_env(settings, MFA_SMTP_URL=server.url)
        server.inbox.stall = True
        first = _worker(env, tmp_path, tmp_path / "first.log")
        second = None
        try:
            org = world.org()
            world.user(org, "alice")
            with world.services.unit_of_work() as uow:
                user = uow.session.execute(
                    select(User).where(User.org_id == org, User.external_id == "alice")
                ).scalar_one()
                user.email = "alice@example.com"
                user_id = user.id
            admin = world.token(org, "root", "admin")
            assert world.call("POST", "/v1/users/alice/mfa/unlock", admin).status_code == 204
            await_true(lambda: server.inbox.count() == 1, 60, "the SMTP server to hold it")
            stop_group(first, signal.SIGKILL)  # mid-send: the server never answered
            server.inbox.stall = False

            with world.services.unit_of_work() as uow:
                (row,) = uow.session.execute(
                    select(MailDelivery).where(MailDelivery.user_id == user_id)
                ).scalars()
                assert (row.status, row.attempts) == (MailStatus.PENDING, 1)
                # The lease (5 minutes) runs out: moved back rather than waited for.
                past = utcnow() - timedelta(seconds=1)
                uow.session.execute(
                    update(MailDelivery)
                    .where(MailDelivery.id == row.id)
                    .values(leased_until=past, next_attempt_at=past)
                )
            second = _worker(env, tmp_path, tmp_path / "second.log")
            assert _republish_due_mails(world.publisher, world.services, utcnow()) == 1

            def sent() -> bool:
                with world.services.unit_of_work() as uow:
                    got = uow.session.get(MailDelivery, row.id, populate_existing=True)
                    return got is not None and got.status == MailStatus.SENT

            await_true(sent, 60, "the mail to be sent again")
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    stop_group(proc)
    held, resent = server.inbox.messages
    assert held.message["Message-ID"] == resent.message["Message-ID"]
    assert held.message.get_body(("plain",)).get_content() == (  # type: ignore[union-attr]
        resent.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    )
