"""Secret hunt: run the whole flow on PostgreSQL with RabbitMQ, keep everything the
system wrote down, and look for the secrets in it.

Written down: a dump of the database, the broker's messages (read from the
queue before the worker takes them), every log line (root logger at DEBUG, so
third-party debug output too), every audit event (API pages, NDJSON and CSV
exports, the CLI export), every file under the service's folder, and every
decoded part (and header) of every mail the delivery worker sent to a real SMTP
server. Looked for: the backup codes (any form), the TOTP values submitted (right
and wrong), the TOTP secrets, the bearer tokens, and a browser's ui-link ticket,
session cookie and CSRF token; and, everywhere but in the mails that carry them,
the repudiation tickets. The encrypted sheet and the encrypted TOTP are
ciphertext and do not match; hashes do not either.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner
from kombu import Connection
from sqlalchemy import create_engine, inspect, select, text

from cli.main import cli
from domain import regeneration
from domain.models import MailDelivery, MailStatus, User
from infra.db import utcnow
from infra.logs import JsonFormatter
from infra.settings import Settings
from tests.support.api_world import ApiWorld, api_world
from tests.support.codes import CODE_RE, wrong_totp
from tests.support.leaks import numbers_held
from tests.support.polling import await_true
from tests.support.postgres import fresh_postgres_database
from tests.support.settings import TEST_SECRET_KEY, make_settings
from tests.support.smtp import SmtpServer, parts, smtp_server
from workers.app import regeneration_queue

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def hunt_database_url() -> Iterator[str]:
    """A database of its own, so its dump holds this test's rows and nothing else."""
    with fresh_postgres_database("mfa_hunt") as url:
        yield url


class LogCapture(logging.Handler):
    """Every record, as the production JSON line and as its unredacted text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.json = JsonFormatter()
        self.plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.json.format(record))
            self.lines.append(self.plain.format(record))
        except Exception:
            self.handleError(record)


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    root = logging.getLogger()
    level = root.level
    # Loggers that do not propagate would slip past the root handler.
    islands = [
        lg
        for lg in logging.root.manager.loggerDict.values()
        if isinstance(lg, logging.Logger) and not lg.propagate
    ]
    root.addHandler(handler)
    for lg in islands:
        lg.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # SQLAlchemy keeps its statements (with parameters and rows) at WARNING unless asked.
    sql = logging.getLogger("sqlalchemy.engine")
    sql_level = sql.level
    sql.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        sql.setLevel(sql_level)
        root.setLevel(level)
        root.removeHandler(handler)
        for lg in islands:
            lg.removeHandler(handler)


@dataclass
class Secrets:
    codes: set[str] = field(default_factory=set)
    totps: set[str] = field(default_factory=set)
    totp_secrets: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)  # the encryption and audit signing keys
    # A browser's: ui-link tickets, session tokens (the cookie), CSRF tokens.
    browser: set[str] = field(default_factory=set)

    def add_code(self, shown: str) -> None:
        bare = shown.replace("-", "")
        # As shown, as typed (bare or spaced), and its secret part: the first two
        # symbols only locate the code and are stored in clear by design.
        self.codes |= {shown, shown.replace("-", " "), bare, bare[2:]}

    def found_in(self, where: str, haystack: str) -> list[str]:
        low = haystack.lower()
        hits = [f"{where}: code {c}" for c in self.codes if c.lower() in low]
        hits += [f"{where}: TOTP secret {s}" for s in self.totp_secrets if s.lower() in low]
        hits += [f"{where}: token {t[:8]}..." for t in self.tokens if t in haystack]
        hits += [f"{where}: key {k[:4]}..." for k in self.keys if k in haystack]
        hits += [f"{where}: browser secret {b[:4]}..." for b in self.browser if b in haystack]
        hits += [f"{where}: TOTP value {v}" for v in numbers_held(haystack, self.totps)]
        return hits


def peek_queue(amqp_url: str, queue: str, expected: int, timeout: float = 10.0) -> list[str]:
    """The queue's messages (body and properties) without consuming them: unacked
    messages go back to the queue when the channel closes."""
    found: list[str] = []
    deadline = time.monotonic() + timeout
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        while len(found) < expected and time.monotonic() < deadline:
            message = channel.basic_get(queue, no_ack=False)
            if message is None:
                time.sleep(0.05)
                continue
            body = message.body.decode() if isinstance(message.body, bytes) else message.body
            found.append(body + "\n" + json.dumps(message.properties, default=str))
        channel.close()
    return found


def pg_dump_text(url: str) -> str:
    """pg_dump of the whole database (data only), or "" where pg_dump is missing."""
    if not shutil.which("pg_dump"):
        return ""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    done = subprocess.run(
        ["pg_dump", "--data-only", "--no-owner", "--no-privileges", "--dbname", plain],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def rows_text(url: str) -> str:
    """Every row of every table as PostgreSQL's text form, with or without pg_dump."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            # Table names from the database's own catalogue, quoted: nothing from outside.
            return "\n".join(
                str(row[0])
                for table in tables
                for row in conn.execute(text(f'SELECT t::text FROM "{table}" t'))  # noqa: S608
            )
    finally:
        engine.dispose()


def files_text(folder: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("latin-1") for p in sorted(folder.rglob("*")) if p.is_file()
    )


def audit_text(
    world: ApiWorld, org_id: str, auditor: str, settings: Settings, signing_key: str
) -> str:
    parts = []
    cursor: str | None = None
    while True:
        query = "limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = world.call("GET", "/v1/audit/events", auditor, query_string=query)
        assert page.status_code == 200, page.text
        parts.append(page.text)
        cursor = page.json["next"]
        if cursor is None:
            break
    for accept in ("application/x-ndjson", "text/csv"):
        got = world.call("GET", "/v1/audit/events", auditor, headers={"Accept": accept})
        assert got.status_code == 200, got.text
        parts.append(got.text)
    env = {
        "MFA_DATABASE_URL": settings.database_url,
        "MFA_BROKER_URL": settings.broker_url,
        "MFA_SECRET_KEY": TEST_SECRET_KEY,
        "MFA_AUDIT_SIGNING_KEY": signing_key,
        "MFA_VAR_DIR": str(settings.var_dir),
    }
    exported = CliRunner(env=env).invoke(cli, ["audit", "export", "--org", org_id])
    assert exported.exit_code == 0, exported.output
    parts.append(exported.output)
    return "\n".join(parts)


def _codes(lines: list[str]) -> list[str]:
    return [m.group(0) for line in lines for m in CODE_RE.finditer(line)]


def _process_now(world: ApiWorld, regeneration_id: str) -> None:
    with world.services.unit_of_work() as uow:
        done = regeneration.process_regeneration(uow, world.services, regeneration_id, utcnow())
    assert done == "ready"


@pytest.fixture
def mail_server() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


_TICKET = re.compile(r"/v1/repudiations/([A-Za-z0-9_\-]{20,})")


def _mails_settled(world: ApiWorld, org: str) -> bool:
    with world.services.unit_of_work() as uow:
        statuses = uow.session.execute(
            select(MailDelivery.status).where(MailDelivery.org_id == org)
        ).scalars()
        found = list(statuses)
    return bool(found) and all(s != MailStatus.PENDING for s in found)


def test_no_secret_is_written_down_anywhere(
    tmp_path: Path,
    hunt_database_url: str,
    amqp_url: str,
    captured_logs: LogCapture,
    mail_server: SmtpServer,
) -> None:
    signing_key = base64.b64encode(os.urandom(32)).decode()
    settings = make_settings(
        tmp_path,
        MFA_DATABASE_URL=hunt_database_url,
        MFA_BROKER_URL=amqp_url,
        MFA_AUDIT_SIGNING_KEY=signing_key,
        MFA_SMTP_URL=mail_server.url,
    )
    found = Secrets(keys={TEST_SECRET_KEY, signing_key})
    with api_world(settings, worker=False) as world:
        org = world.org()
        roles = {r: world.token(org, f"{r}-1", r) for r in ("service", "admin", "auditor")}
        found.tokens |= set(roles.values())

        # Enrollment with the worker stopped: its first set waits in the queue. Alice
        # has both addresses, so every step of hers is mailed twice.
        world.user(org, "alice")
        with world.services.unit_of_work() as uow:
            alice_row = uow.session.execute(
                select(User).where(User.org_id == org, User.external_id == "alice")
            ).scalar_one()
            alice_row.email, alice_row.recovery_email = "alice@example.com", "a2@example.net"
        alice = world.token(org, "alice", "user")
        found.tokens.add(alice)
        started = world.call("POST", "/v1/me/mfa/enrollment", alice)
        assert started.status_code == 201, started.text
        secret = started.json["secret"]
        world.secrets[(org, "alice")] = secret
        found.totp_secrets.add(secret)
        now_code = pyotp.TOTP(secret).now()
        found.totps.add(now_code)
        confirmed = world.call(
            "POST", "/v1/me/mfa/enrollment/confirm", alice, json={"totp": now_code}
        )
        assert confirmed.status_code == 201, confirmed.text
        first = confirmed.json["regeneration"]["id"]
        # A user has one regeneration pending at a time: the first set is made here, as
        # the worker would make it (its message stays queued; the worker finds it done).
        _process_now(world, first)

        # A second user, enrolled the same way, to queue a wrong code for.
        world.user(org, "carol")
        carol = world.token(org, "carol", "user")
        found.tokens.add(carol)
        carol_secret = world.call("POST", "/v1/me/mfa/enrollment", carol).json["secret"]
        found.totp_secrets.add(carol_secret)
        carol_code = pyotp.TOTP(carol_secret).now()
        found.totps.add(carol_code)
        carol_done = world.call(
            "POST", "/v1/me/mfa/enrollment/confirm", carol, json={"totp": carol_code}
        )
        assert carol_done.status_code == 201, carol_done.text
        carol_first = carol_done.json["regeneration"]["id"]
        _process_now(world, carol_first)

        # A regeneration (with an idempotency key: its body fingerprint is stored) and
        # one with a wrong code, also queued behind the stopped worker.
        next_code = world.totp(org, "alice", offset_steps=1)
        bad_code = wrong_totp(carol_secret)
        found.totps |= {next_code, bad_code}
        regen = world.call(
            "POST",
            "/v1/me/backup-codes/regenerations",
            alice,
            json={"totp": next_code},
            headers={"Idempotency-Key": "hunt-1"},
        )
        assert regen.status_code == 202, regen.text
        failing = world.call(
            "POST", "/v1/me/backup-codes/regenerations", carol, json={"totp": bad_code}
        )
        assert failing.status_code == 202, failing.text

        queue = regeneration_queue(settings)
        messages = peek_queue(amqp_url, queue, expected=4)
        assert len(messages) == 4, messages
        broker = "\n".join(messages)
        assert regen.json["id"] in broker  # ids do cross the broker: the search can see

        with start_worker(
            world.publisher.app,
            pool="solo",
            perform_ping_check=False,
            shutdown_timeout=10,
            loglevel="DEBUG",  # the embedded worker sets the root logger's level
            # Its 2 s heartbeat timer wakes the event loop: without it, a message already
            # buffered from the socket (or the stop request) waits ~10 s for a poll timeout.
            without_heartbeat=False,
        ):
            assert world.await_status(alice, first)["status"] == "ready"
            assert world.await_status(alice, regen.json["id"])["status"] == "ready"
            refused = world.await_status(carol, failing.json["id"])
            assert (refused["status"], refused["failure"]) == ("failed", "invalid-totp")
            for code in _codes(world.sheet_text(carol, carol_first)):
                found.add_code(code)
            old_set = _codes(world.sheet_text(alice, first))
            # The newer set through the page's JSON form (codes and PDF in one answer).
            as_json = world.call(
                "GET",
                f"/v1/me/backup-codes/regenerations/{regen.json['id']}/sheet",
                alice,
                headers={"Accept": "application/json"},
            )
            assert as_json.status_code == 200, as_json.text
            new_set = _codes([str(code) for code in as_json.json["codes"]])
            assert len(old_set) == len(new_set) == 5
            for code in old_set + new_set:
                found.add_code(code)

            # Sign-in: right, spent, deactivated and wrong codes.
            verify = "/v1/users/alice/backup-codes/verify"
            service = roles["service"]
            answers = [
                world.call("POST", verify, service, json={"code": c}).json["accepted"]
                for c in (new_set[0], new_set[0].lower().replace("-", " "), old_set[1], "NOPE")
            ]
            assert answers == [True, False, False, False]

            # A second user: a wrong code at confirmation, then the right one.
            world.user(org, "bob")
            bob = world.token(org, "bob", "user")
            found.tokens.add(bob)
            bob_secret = world.call("POST", "/v1/me/mfa/enrollment", bob).json["secret"]
            found.totp_secrets.add(bob_secret)
            bob_wrong, bob_right = wrong_totp(bob_secret), pyotp.TOTP(bob_secret).now()
            found.totps |= {bob_wrong, bob_right}
            confirm = "/v1/me/mfa/enrollment/confirm"
            assert world.call("POST", confirm, bob, json={"totp": bob_wrong}).status_code == 422
            bob_done = world.call("POST", confirm, bob, json={"totp": bob_right})
            assert bob_done.status_code == 201, bob_done.text
            world.await_status(bob, bob_done.json["regeneration"]["id"])

            # TOTP at sign-in: a wrong code, the next step's right one, the same again.
            totp_verify = "/v1/users/bob/totp/verify"
            bob_next = pyotp.TOTP(bob_secret).at(time.time() + 30)
            bob_other_wrong = wrong_totp(bob_secret)
            found.totps |= {bob_next, bob_other_wrong}
            seen = {"client_ip": "203.0.113.9", "user_agent": "hunt"}
            verdicts = [
                world.call("POST", totp_verify, service, json={"totp": t, **seen}).json
                for t in (bob_other_wrong, bob_next, bob_next)
            ]
            assert [v["accepted"] for v in verdicts] == [False, True, False]

            # Tokens over the API: issued, used, listed, revoked; issued and signed out.
            issued = [
                world.call("POST", "/v1/users/alice/tokens", who, json={"ttl_seconds": 300})
                for who in (service, roles["admin"])
            ]
            assert [i.status_code for i in issued] == [201, 201]
            found.tokens |= {i.json["token"] for i in issued}
            first_issued, second_issued = (i.json for i in issued)
            assert world.call("GET", "/v1/me/mfa", first_issued["token"]).status_code == 200
            listed = world.call("GET", "/v1/org/tokens", roles["admin"])
            assert listed.status_code == 200, listed.text
            revoke = f"/v1/org/tokens/{first_issued['token_id']}"
            assert world.call("DELETE", revoke, roles["admin"]).status_code == 204
            assert world.call("GET", "/v1/me/mfa", first_issued["token"]).status_code == 401
            assert world.call("DELETE", "/v1/me/token", second_issued["token"]).status_code == 204

            # A browser: a ui-link, its session (the cookie), a call refused for want of
            # the CSRF token, a reload, a state change and the sign-out with it.
            link = world.call(
                "POST", "/v1/users/alice/ui-links", service, json={"page": "security"}
            )
            assert link.status_code == 201, link.text
            ui_ticket = link.json["url"].partition("#ticket=")[2]
            entered = world.call(
                "POST",
                "/ui/session",
                json={"ticket": ui_ticket},
                headers={"Origin": settings.public_url},
            )
            assert entered.status_code == 200, entered.text
            cookie = entered.cookies["mfa_session"].value
            csrf = entered.json["csrf_token"]
            found.browser |= {ui_ticket, cookie, csrf}
            jar = {"Cookie": f"mfa_session={cookie}"}
            assert world.call("GET", "/v1/me/mfa", headers=jar).status_code == 200
            assert world.call("GET", "/ui/session", headers=jar).json["csrf_token"] == csrf
            refused_page = world.call("POST", "/v1/me/mfa/enrollment", headers=jar)
            assert refused_page.status_code == 403, refused_page.text
            signed_out = world.call("DELETE", "/v1/me/token", headers={**jar, "X-CSRF-Token": csrf})
            assert signed_out.status_code == 204, signed_out.text
            assert world.call("POST", "/ui/session", json={"ticket": ui_ticket}).status_code == 410

            # Policy off: a code is refused unseen; then on again.
            admin = roles["admin"]
            off = {"backup_codes_enabled": False, "code_count": 8}
            assert world.call("PUT", "/v1/org/policy", admin, json=off).status_code == 200
            disabled = world.call("POST", verify, service, json={"code": new_set[2]})
            assert disabled.status_code == 403, disabled.text
            on = {"backup_codes_enabled": True, "code_count": 8}
            assert world.call("PUT", "/v1/org/policy", admin, json=on).status_code == 200

            # The mails go out; one of their links is looked at and confirmed.
            await_true(lambda: _mails_settled(world, org), 30, "the mails to be sent")
            sent = [m.message for m in mail_server.inbox.messages]
            tickets = {t for m in sent for t in _TICKET.findall("\n".join(parts(m)))}
            assert len(sent) >= 8 and len(tickets) == len(sent)  # one link a mail
            ticket = sorted(tickets)[0]
            assert world.call("GET", f"/v1/repudiations/{ticket}").status_code == 200
            assert world.call("POST", f"/v1/repudiations/{ticket}").status_code == 200
            await_true(
                lambda: mail_server.inbox.count() >= len(sent) + 2 and _mails_settled(world, org),
                30,
                "the repudiation mails",
            )
            mails = [p for m in mail_server.inbox.messages for p in parts(m.message)]

        audit = audit_text(world, org, roles["auditor"], settings, signing_key)
        assert "backup_codes" in audit and regen.json["id"] in audit

    dump = pg_dump_text(hunt_database_url)
    rows = rows_text(hunt_database_url)
    for text_form in (dump, rows) if dump else (rows,):
        assert first in text_form and "alice" in text_form  # they hold this flow's rows
    logs = "\n".join(captured_logs.lines)
    assert len(captured_logs.lines) > 100 and first in logs  # and the worker's log lines

    print(
        f"\nsecret hunt: {len(dump)} chars of pg_dump, {len(messages)} broker messages, "
        f"{len(captured_logs.lines) // 2} log records, {len(audit)} chars of audit exports"
    )
    hits = (
        found.found_in("pg_dump", dump)
        + found.found_in("table rows", rows)
        + found.found_in("broker", broker)
        + found.found_in("logs", logs)
        + found.found_in("audit", audit)
        + found.found_in("files", files_text(tmp_path))
        + found.found_in("mails", "\n".join(mails))
    )
    # The tickets are in their mails, and nowhere else.
    elsewhere = {
        "pg_dump": dump,
        "table rows": rows,
        "broker": broker,
        "logs": logs,
        "audit": audit,
        "files": files_text(tmp_path),
    }
    hits += [f"{where}: ticket" for where, t in elsewhere.items() for k in tickets if k in t]
    # 15 codes (alice: two sets, carol: one) in 4 forms; 8 tokens (3 roles, 3 users, 2
    # issued over the API)
    assert len(found.codes) == 60 and len(found.tokens) == 8 and len(found.totps) >= 6
    assert len(found.browser) == 3
    assert hits == [], "\n".join(hits)


def test_the_hunt_finds_what_is_there() -> None:
    """The search itself: every kind of secret is found where it is, in any case and
    form, and six-digit runs inside timestamps or longer numbers are not mistaken."""
    s = Secrets(totps={"123456"}, totp_secrets={"JBSWY3DPEHPK3PXP"}, tokens={"mfa_abc"})
    s.add_code("AB12-CD34-EF56-GH7K")
    assert s.found_in("x", "code ab12cd34ef56gh7k seen")
    assert s.found_in("x", "part 12cd34ef56gh7k")
    assert s.found_in("x", "typed 'ab12 cd34 ef56 gh7k'")
    assert s.found_in("x", "secret jbswy3dpehpk3pxp")
    assert s.found_in("x", "Authorization: Bearer mfa_abc")
    assert s.found_in("x", '{"totp": "123456"}')
    assert not s.found_in("x", "at 2026-01-02 03:04:05.123456+00 seq 1234567 t=1.123456")
    assert not s.found_in("x", "(datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=utc),)")
    assert not s.found_in("x", "datetime.time(3, 4, 5, 123456)")
    assert s.found_in("x", "(datetime.datetime(2026, 1, 2, 3, 4, 5, 1), '123456')")
    assert not s.found_in("x", "[123456] [INFO] Booting worker with pid: 123456")
    assert not s.found_in("x", "Listening at: http://127.0.0.1:8000 (123456)")
    assert s.found_in("x", "[INFO] rejected ['123456']")
