"""Mail to users: what the projection adds to an event that causes mails, and how
fast a mail is composed.

Baseline: the same audit append (a backup code used) for a user of an organization
with mails off, one transaction each, on the same database in the same run; the
measure: mails on and two addresses, so each append also inserts two mail rows and
their two outbox rows. Runs on a fresh PostgreSQL database when one answers at
BENCH_POSTGRES_URL, else on SQLite.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from bench.common import POSTGRES_URL, fresh_postgres, markdown_table
from domain import accounts, audit
from domain.audit.types import EventType, Outcome
from domain.models import Organization, User
from domain.notify.mail_compose import MailFacts, compose
from domain.notify.mail_rules import MailKind
from infra.db import make_engine, make_session_factory, unit_of_work
from infra.migrate import upgrade
from tests.support.services import reachable

APPENDS = int(os.environ.get("BENCH_MAIL_APPENDS", "1000"))
ROUNDS = 5
COMPOSES = int(os.environ.get("BENCH_MAIL_COMPOSES", "2000"))
CTX = audit.Context(principal_id="front", role="service", request_id="r", source_ip="::1")


@contextmanager
def _database() -> Iterator[tuple[str, str]]:
    if reachable(POSTGRES_URL, 5432, timeout=1):
        with fresh_postgres("bench_mail") as url:
            yield "PostgreSQL", url
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            yield "SQLite", url


def _org(sessions: sessionmaker[Session], notify: bool) -> str:
    org_id = f"mail-{uuid.uuid4().hex[:8]}"
    with unit_of_work(sessions) as uow:
        org = accounts.create_org(uow, org_id, audit.CLI)
        org.notify_users = notify
        user = accounts.create_user(uow, org_id, "alice", "alice@example.com", audit.CLI)
        user.recovery_email = "alice@example.net"
    return org_id


def _appends_per_second(sessions: sessionmaker[Session], org_id: str, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        with unit_of_work(sessions) as uow:
            audit.append(
                uow,
                org_id,
                EventType.CODE_ACCEPTED,
                Outcome.SUCCESS,
                CTX,
                user_id="alice",
                details={"remaining": i % 5, "set_id": "K7Q2"},
            )
    return n / (time.perf_counter() - start)


def _composes_per_second(n: int) -> float:
    facts = MailFacts(
        kind=MailKind.CODE_USED,
        to="alice@example.com",
        org_name="acme",
        occurred_at=datetime.now(UTC),
        support_contact="help@acme.example",
        display_name="Alice",
        where_ip="203.0.113.7",
        where_agent="Firefox/140",
        remaining=2,
        repudiation_url="https://mfa.example/v1/repudiations/" + "x" * 43,
    )
    start = time.perf_counter()
    for _ in range(n):
        compose(facts, "security@mfa.example", "<e.code_used.email@mfa.example>").as_bytes()
    return n / (time.perf_counter() - start)


def run() -> list[dict[str, object]]:
    with _database() as (label, url):
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            off, on = _org(sessions, notify=False), _org(sessions, notify=True)
            _appends_per_second(sessions, off, 50)  # warm-up
            _appends_per_second(sessions, on, 50)
            # Interleaved rounds, so a burst of load elsewhere hits both alike; the
            # median round of each is reported.
            part = APPENDS // ROUNDS
            base, mail = [], []
            for _ in range(ROUNDS):
                base.append(_appends_per_second(sessions, off, part))
                mail.append(_appends_per_second(sessions, on, part))
            with unit_of_work(sessions) as uow:
                counted = uow.session.get(Organization, on)
                assert counted is not None and counted.notify_users
                assert uow.session.query(User).filter(User.org_id == on).count() == 1
        finally:
            engine.dispose()
    plain, with_mail = statistics.median(base), statistics.median(mail)
    composes = _composes_per_second(COMPOSES)
    return [
        {
            "measure": f"code-used event, mails off ({label}, baseline)",
            "per_s": plain,
            "ratio": 1.0,
        },
        {
            "measure": "code-used event, mails on, 2 addresses (+2 mail and 2 outbox rows)",
            "per_s": with_mail,
            "ratio": with_mail / plain,
        },
        {"measure": "compose one mail (text + HTML, as bytes)", "per_s": composes, "ratio": None},
    ]


if __name__ == "__main__":
    print(markdown_table(run()))
