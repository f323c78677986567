"""The fault tests' harness (their fixture is in conftest.py): the real pipeline
(PostgreSQL, RabbitMQ, worker processes) under failure. Here: a `Stack` (settings
shared by the test and its worker processes, with queues of its own, deleted at
the end), real worker processes to kill, and helpers to seed enrolled users and
check the outcome.

MFA_SOAK=1 raises the counts of the tests that take one (`soak(normal, heavy)`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kombu.connection import Connection
from sqlalchemy import select

from domain import accounts, audit, enrollment, policy, regeneration
from domain.audit.checkpoints import checkpoint_org
from domain.audit.types import EventType
from domain.audit.verify import verify_chain
from domain.codes import normalise
from domain.models import AuditEvent, BackupCode, Regeneration, User
from domain.totp import code_for_step, step_at
from infra.db import utcnow
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import Person, unique
from tests.support.codes import CODE_RE
from tests.support.processes import child_env
from tests.support.settings import FAST_ARGON2, TEST_SECRET_KEY
from workers.app import maintenance_queue, regeneration_queue
from workers.runtime import make_publisher

SOAK = os.environ.get("MFA_SOAK") == "1"
SIGNING_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
CTX = audit.Context(principal_id="fault-test", role="user", token_id=None, request_id="faults")


def soak(normal: int, heavy: int) -> int:
    return heavy if SOAK else normal


# --- worker processes -----------------------------------------------------------

# `mfa-codes worker` with the tasks' clock moved forward by
# MFA_TEST_CLOCK_OFFSET_SECONDS: a backlog that waited that long, without waiting.
SHIFTED_WORKER = """
import datetime, os, sys
import workers.tasks
real = workers.tasks.utcnow
offset = datetime.timedelta(seconds=float(os.environ["MFA_TEST_CLOCK_OFFSET_SECONDS"]))
workers.tasks.utcnow = lambda: real() + offset
from cli.main import cli
cli(sys.argv[1:], prog_name="mfa-codes")
"""


class WorkerProcess:
    """A Celery worker in its own process group (prefork: a main process and its
    pool children), so a kill takes all of it, as a crashed container would."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv, self.env, self.cwd, self.log = argv, env, cwd, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        """Pids of the pool processes (Linux /proc; no psutil needed)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                found.append(int(entry.name))
        return found

    def kill(self) -> None:
        """SIGKILL to the whole worker: main process and pool."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def kill_child(self) -> int | None:
        """SIGKILL to one pool process only: the main process sees the worker lost."""
        for pid in self.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                return pid
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- the stack ------------------------------------------------------------------


class Stack:
    """Settings for one test: its own queue prefix, the database and broker given,
    worker processes that share them, and cleanup of both."""

    def __init__(self, tmp_path: Path, database_url: str, amqp_url: str) -> None:
        self.tmp_path = tmp_path
        self.amqp_url = amqp_url
        self.base = {
            "MFA_VAR_DIR": str(tmp_path / "var"),
            "MFA_DATABASE_URL": database_url,
            "MFA_BROKER_URL": amqp_url,
            "MFA_SECRET_KEY": TEST_SECRET_KEY,
            "MFA_AUDIT_SIGNING_KEY": SIGNING_KEY,
            "MFA_QUEUE_PREFIX": f"fault{uuid.uuid4().hex[:10]}",
            "MFA_STALE_AFTER_SECONDS": "2",
            "MFA_LOG_FORMAT": "text",
            "MFA_LOG_LEVEL": "WARNING",
            **FAST_ARGON2,
        }
        self.workers: list[WorkerProcess] = []
        self.settings = self.settings_with()

    def use(self, **changes: str) -> Settings:
        """Change the settings of the test and of the workers it starts from now on."""
        self.base.update(changes)
        self.settings = self.settings_with()
        return self.settings

    def env(self, **changes: str) -> dict[str, str]:
        return {**self.base, **changes}

    def settings_with(self, **changes: str) -> Settings:
        return Settings.from_env(env=self.env(**changes), dotenv=None)

    @property
    def regeneration_queue(self) -> str:
        return regeneration_queue(self.settings)

    def worker(
        self, *, concurrency: int = 1, clock_offset: float = 0.0, **changes: str
    ) -> WorkerProcess:
        """A started `mfa-codes worker` process (prefork) on both queues."""
        env = child_env(**self.env(**changes))
        n = len(self.workers) + 1
        command = ["worker", "--pool=prefork", f"--concurrency={concurrency}"]
        command.append(f"--hostname=fault{n}-{uuid.uuid4().hex[:6]}@%h")
        if clock_offset:
            env["MFA_TEST_CLOCK_OFFSET_SECONDS"] = str(clock_offset)
            argv = [sys.executable, "-c", SHIFTED_WORKER, *command]
        else:
            argv = [str(Path(sys.executable).with_name("mfa-codes")), *command]
        cwd = self.tmp_path  # no stray .env from the repository
        worker = WorkerProcess(argv, env, cwd, self.tmp_path / f"worker-{n}.log").start()
        self.workers.append(worker)
        return worker

    def _broker(self) -> Connection:
        return Connection(self.amqp_url, connect_timeout=5)  # type: ignore[no-untyped-call]

    def queue_state(self, queue: str | None = None) -> tuple[int, int]:
        """(messages ready, consumers) of a queue; (0, 0) when it does not exist yet."""
        name = queue or self.regeneration_queue
        with self._broker() as conn:
            try:
                _, messages, consumers = conn.default_channel.queue_declare(name, passive=True)
            except Exception:  # NOT_FOUND closes the channel; the queue is not there yet
                return (0, 0)
            return int(messages), int(consumers)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        with contextlib.suppress(Exception), self._broker() as conn:
            channel = conn.channel()
            for name in (self.regeneration_queue, maintenance_queue(self.settings)):
                channel.queue_delete(name)
                channel.exchange_delete(name)


@contextlib.contextmanager
def publishing_services(settings: Settings) -> Iterator[Services]:
    """Services whose units of work publish their outbox rows after commit, as the
    API's do."""
    svc = Services.build(settings)
    publisher = make_publisher(svc)
    try:
        yield svc
    finally:
        publisher.uninstall()
        svc.close()


# --- seeding --------------------------------------------------------------------


def seed_members(
    svc: Services, count: int, *, code_count: int = 5, batch: int = 100
) -> tuple[str, list[Person]]:
    """An organization of `count` users with confirmed TOTP and no codes yet.

    Enrollment is confirmed two minutes ago with backups off (so it queues no first
    set), then the policy is turned on: a request made now is the user's only set."""
    org_id = unique()
    then = utcnow() - timedelta(minutes=2)
    with svc.unit_of_work() as uow:
        org = accounts.create_org(uow, org_id, audit.CLI)
        policy.set_policy(uow, org, False, code_count, audit.CLI)
    members: list[Person] = []
    for start in range(0, count, batch):
        with svc.unit_of_work() as uow:
            for i in range(start, min(count, start + batch)):
                user = accounts.create_user(uow, org_id, f"u{i:05d}", None, audit.CLI)
                secret, _ = enrollment.start_enrollment(uow, svc, user, CTX)
                code = code_for_step(secret, step_at(then))
                assert enrollment.confirm_enrollment(uow, svc, user, code, then, CTX) is None
                members.append(Person(org_id, user.external_id, secret))
    with svc.unit_of_work() as uow:
        policy.set_policy(uow, accounts.get_org(uow.session, org_id), True, code_count, audit.CLI)
    return org_id, members


def submit(svc: Services, members: Sequence[Person]) -> list[str]:
    """One regeneration per member, all accepted now, in one transaction (the
    installed publisher sends them after the commit); their ids, in order."""
    with svc.unit_of_work() as uow:
        ids = []
        for m in members:
            user = accounts.get_user(uow.session, m.org_id, m.external_id)
            now = utcnow()
            outcome = regeneration.request_regeneration(uow, svc, user, m.code(now), None, now, CTX)
            ids.append(outcome.regeneration.id)
        return ids


# --- checking -------------------------------------------------------------------


def statuses(svc: Services, ids: Sequence[str]) -> dict[str, str]:
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Regeneration.id, Regeneration.status).where(Regeneration.id.in_(ids))
        )
        return {rid: status for rid, status in rows}


def await_statuses(
    svc: Services,
    ids: Sequence[str],
    final: frozenset[str] = regeneration.FINISHED,
    timeout: float = 60,
    poke: Callable[[], object] | None = None,
    poke_every: float = 3.0,
) -> dict[str, str]:
    """Poll until every id has a status in `final`; `poke` runs every few seconds
    meanwhile (a republish, as the beat would)."""
    deadline = time.monotonic() + timeout
    poked = time.monotonic()
    while True:
        got = statuses(svc, ids)
        if len(got) == len(ids) and all(s in final for s in got.values()):
            return got
        if time.monotonic() > deadline:
            waiting = Counter(s for s in got.values() if s not in final)
            raise AssertionError(f"after {timeout:.0f}s still not finished: {dict(waiting)}")
        if poke is not None and time.monotonic() - poked > poke_every:
            poke()
            poked = time.monotonic()
        time.sleep(0.1)


def event_counts(svc: Services, org_id: str, type_: str) -> Counter[str]:
    """How many events of `type_` name each regeneration id."""
    with svc.unit_of_work() as uow:
        details = uow.session.execute(
            select(AuditEvent.details).where(AuditEvent.org_id == org_id, AuditEvent.type == type_)
        ).scalars()
        return Counter(str(d.get("regeneration_id")) for d in details)


def codes_by_user(svc: Services, org_id: str) -> dict[str, list[BackupCode]]:
    """Every code row (active or not) of the organization's users, by external id."""
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(
            select(User.external_id, BackupCode)
            .join(BackupCode, BackupCode.user_id == User.id)
            .where(User.org_id == org_id)
        ).all()
    found: dict[str, list[BackupCode]] = {}
    for external_id, code in rows:
        found.setdefault(external_id, []).append(code)
    return found


def assert_one_active_set(codes: Sequence[BackupCode], code_count: int, set_id: str) -> None:
    """No half rotation: the active codes are exactly one whole set, the expected one."""
    active = [c for c in codes if c.deactivated_at is None]
    assert {c.set_id for c in active} == {set_id}, "active codes span sets or miss the set"
    assert sorted(c.position for c in active) == list(range(1, code_count + 1))


def assert_sheet_is_active_set(
    svc: Services,
    sheet_codes: Sequence[str],
    codes: Sequence[BackupCode],
    *,
    hash_all: bool = True,
    rng: random.Random | None = None,
) -> None:
    """The sheet's codes are the active codes, one to one: each code's locator names
    a distinct active code, and its argon2 hash verifies (every code, or with
    `hash_all=False` one picked at random, when argon2 runs at its real cost)."""
    active = {c.locator: c for c in codes if c.deactivated_at is None}
    assert len(sheet_codes) == len(active), "the sheet and the active set differ in size"
    pairs = []
    for shown in sheet_codes:
        assert CODE_RE.fullmatch(shown), "the text sheet holds something other than codes"
        value = normalise(shown)
        assert value is not None and value[:2] in active, "a code of no active row"
        assert active[value[:2]].symbols == len(value), "a row records another format"
        pairs.append((active[value[:2]], value))
    assert len({row.id for row, _ in pairs}) == len(active)
    checked = pairs if hash_all else [(rng or random.Random()).choice(pairs)]
    for row, value in checked:
        assert svc.hasher.verify(row.hash, value), "a code does not verify against its row"


def assert_chain_ok(svc: Services, org_id: str) -> None:
    # No beat runs here, and a soak outlasts twice the checkpoint interval: sign the
    # head as the beat would have (the walk still checks every event).
    with svc.unit_of_work() as uow:
        checkpoint_org(uow, svc.settings, org_id, datetime.now(UTC))
    with svc.unit_of_work() as uow:
        result = verify_chain(uow.session, org_id, svc.settings)
    assert result.ok, f"audit chain broken at seq {result.first_bad_seq}: {result.reason}"


def succeeded_once(svc: Services, org_id: str, ids: Sequence[str]) -> None:
    succeeded = event_counts(svc, org_id, EventType.REGENERATION_SUCCEEDED)
    failed = event_counts(svc, org_id, EventType.REGENERATION_FAILED)
    twice = {rid: n for rid, n in succeeded.items() if n != 1}
    assert not twice, f"succeeded more than once: {twice}"
    assert all(succeeded[rid] == 1 for rid in ids), "a regeneration has no succeeded event"
    assert not any(failed[rid] for rid in ids), "a regeneration has a failed event"
