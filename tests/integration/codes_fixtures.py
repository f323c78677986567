"""Helpers for the sign-in and administration tests (no fixtures here).

Users and codes are made through the domain: accounts for organizations and
users, a confirmed TotpEnrollment (secret encrypted with services.box), and codes
from domain.codes hashed with services.hasher, inserted as BackupCode rows.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from sqlalchemy import func, select

from domain import accounts, audit, policy, regeneration, signin
from domain import totp as otp
from domain.codes import CodeHasher, PlainCode, generate_codes, new_set_id
from domain.models import AuditEvent, BackupCode, Regeneration, Sheet, TotpEnrollment, User
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import unique

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CTX = audit.Context(
    principal_id="signin-frontend",
    role="service",
    token_id="tok-svc",
    request_id="req-signin",
    source_ip="127.0.0.1",
)
ADMIN = audit.Context(principal_id="root", role="admin", token_id="tok-admin", request_id="req-adm")
_CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b")

T = TypeVar("T")


@dataclass(frozen=True)
class Holder:
    """An enrolled user and the plaintext of their current set (display form)."""

    org_id: str
    external_id: str
    user_id: str
    set_id: str
    codes: tuple[str, ...]


def new_org(svc: Services, *, enabled: bool = True, code_count: int = 5) -> str:
    org_id = unique()
    with svc.unit_of_work() as session:
        org = accounts.create_org(session, org_id, audit.CLI)
        if not enabled or code_count != 5:
            policy.set_policy(session, org, enabled, code_count, audit.CLI)
    return org_id


def new_user(svc: Services, org_id: str, external_id: str = "alice") -> str:
    with svc.unit_of_work() as session:
        return accounts.create_user(session, org_id, external_id, None, audit.CLI).id


def enroll(svc: Services, user_id: str, *, confirmed: bool = True, at: datetime = NOW) -> None:
    with svc.unit_of_work() as session:
        session.add(
            TotpEnrollment(
                user_id=user_id,
                secret_ciphertext=svc.box.encrypt_text(otp.new_secret()),
                confirmed_at=at if confirmed else None,
                created_at=at,
            )
        )


def insert_codes(
    svc: Services,
    user_id: str,
    count: int = 5,
    *,
    at: datetime = NOW,
    hasher: CodeHasher | None = None,
) -> tuple[str, list[PlainCode]]:
    """A new set added next to whatever the user has (nothing is deactivated)."""
    codes = generate_codes(count)
    hashes = (hasher or svc.hasher).hash_all(codes)
    set_id = new_set_id()
    with svc.unit_of_work() as session:
        previous = session.execute(
            select(func.max(BackupCode.generation)).where(BackupCode.user_id == user_id)
        ).scalar()
        session.add_all(
            BackupCode(
                user_id=user_id,
                set_id=set_id,
                generation=(previous or 0) + 1,
                position=code.position,
                locator=code.locator,
                hash=hashed,
                created_at=at,
            )
            for code, hashed in zip(codes, hashes, strict=True)
        )
    return set_id, codes


def holder(
    svc: Services,
    count: int = 5,
    *,
    enabled: bool = True,
    org_id: str | None = None,
    external_id: str = "alice",
    confirmed: bool = True,
    hasher: CodeHasher | None = None,
) -> Holder:
    org_id = org_id or new_org(svc, enabled=enabled)
    user_id = new_user(svc, org_id, external_id)
    enroll(svc, user_id, confirmed=confirmed)
    set_id, codes = insert_codes(svc, user_id, count, hasher=hasher)
    return Holder(org_id, external_id, user_id, set_id, tuple(c.display for c in codes))


def verify(
    svc: Services,
    h: Holder,
    code: object,
    at: datetime = NOW,
    *,
    org_id: str | None = None,
    client_ip: str | None = None,
    user_agent: str | None = None,
) -> signin.VerifyResult:
    """Without client_ip the source is CTX's caller address (127.0.0.1)."""
    with svc.unit_of_work() as session:
        return signin.verify_backup_code(
            session,
            svc,
            org_id or h.org_id,
            h.external_id,
            code,
            at,
            CTX,
            client_ip=client_ip,
            user_agent=user_agent,
        )


def fail(
    svc: Services, h: Holder, times: int, start: datetime = NOW, *, client_ip: str | None = None
) -> None:
    """`times` wrong codes, one second apart."""
    for i in range(times):
        result = verify(svc, h, "ZZZZ-ZZZZ-ZZZZ", start + timedelta(seconds=i), client_ip=client_ip)
        assert not result.accepted and not result.mistyped


def queue_rotation(svc: Services, h: Holder, at: datetime = NOW) -> str:
    """A queued regeneration that needs no TOTP (reason "enrollment"): what the
    real worker then does is exactly a rotation of the user's codes."""
    with svc.unit_of_work() as session:
        user = accounts.get_user(session, h.org_id, h.external_id)
        org = accounts.get_org(session, h.org_id)
        return regeneration.queue_regeneration(session, user, org, "enrollment", None, at, ADMIN).id


def process(svc: Services, regeneration_id: str, at: datetime = NOW) -> str:
    with svc.unit_of_work() as session:
        return regeneration.process_regeneration(session, svc, regeneration_id, at)


def sheet_codes(svc: Services, regeneration_id: str) -> list[str]:
    """The plaintext codes of a stored sheet, read without retrieving it."""
    with svc.unit_of_work() as session:
        sheet = session.get(Sheet, regeneration_id)
        assert sheet is not None
        return _CODE.findall(svc.box.decrypt_text(sheet.text_ciphertext))


def code_rows(svc: Services, user_id: str) -> list[BackupCode]:
    with svc.unit_of_work() as session:
        return list(
            session.execute(
                select(BackupCode)
                .where(BackupCode.user_id == user_id)
                .order_by(BackupCode.generation, BackupCode.position)
            ).scalars()
        )


def row_of(svc: Services, user_id: str, display: str) -> BackupCode:
    locator = display.replace("-", "")[:2]
    matches = [
        r
        for r in code_rows(svc, user_id)
        if r.locator == locator and svc.hasher.verify(r.hash, display.replace("-", ""))
    ]
    assert len(matches) == 1
    return matches[0]


def events(svc: Services, org_id: str, type_: str | None = None) -> list[AuditEvent]:
    with svc.unit_of_work() as session:
        query = select(AuditEvent).where(AuditEvent.org_id == org_id)
        if type_ is not None:
            query = query.where(AuditEvent.type == type_)
        return list(session.execute(query.order_by(AuditEvent.seq)).scalars())


def load_user(svc: Services, user_id: str) -> User:
    with svc.unit_of_work() as session:
        found = session.get(User, user_id)
        assert found is not None
        return found


def load_regeneration(svc: Services, regeneration_id: str) -> Regeneration:
    with svc.unit_of_work() as session:
        reg = session.get(Regeneration, regeneration_id)
        assert reg is not None
        return reg


class CountingHasher(CodeHasher):
    """A real argon2id hasher that counts its verifications (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            memory_kib=settings.argon2.memory_kib,
            time_cost=settings.argon2.time_cost,
            parallelism=settings.argon2.parallelism,
        )
        self._lock = threading.Lock()
        self.verifications = 0

    def verify(self, stored_hash: str, code: str) -> bool:
        with self._lock:
            self.verifications += 1
        return super().verify(stored_hash, code)


def counting(svc: Services) -> CountingHasher:
    """Swap the services' hasher for a counting one; returns it."""
    hasher = CountingHasher(svc.settings)
    svc.hasher = hasher
    return hasher


def run_together(jobs: list[Callable[[threading.Barrier], T]], timeout: float = 60) -> list[T]:
    """Run each job in its own thread; they share a barrier to start at once.
    Results in job order; the first exception raised by a job is re-raised."""
    barrier = threading.Barrier(len(jobs), timeout=timeout)
    results: list[T | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def runner(i: int, job: Callable[[threading.Barrier], T]) -> None:
        try:
            results[i] = job(barrier)
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=runner, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a racing thread did not finish"
    if errors:
        raise errors[0]
    return cast(list[T], results)
