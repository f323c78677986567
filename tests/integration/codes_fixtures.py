"""Helpers for the sign-in and administration tests (no fixtures here): verifying
codes, rotations through the real worker's use case, and reading rows back.
The holders of codes themselves are made by tests/support/builders.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar, cast

from sqlalchemy import select

from domain import accounts, regeneration, signin
from domain.codes import CodeHasher
from domain.models import BackupCode, Sheet, User
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import ADMIN_CTX as ADMIN
from tests.support.builders import NOW, Holder
from tests.support.builders import SIGNIN_CTX as CTX
from tests.support.codes import CODE_RE, WRONG_CODE

T = TypeVar("T")


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
    with svc.unit_of_work() as uow:
        return signin.verify_backup_code(
            uow,
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
        result = verify(svc, h, WRONG_CODE, start + timedelta(seconds=i), client_ip=client_ip)
        assert not result.accepted and not result.mistyped


def queue_rotation(svc: Services, h: Holder, at: datetime = NOW) -> str:
    """A queued regeneration that needs no TOTP (reason "enrollment"): what the
    real worker then does is exactly a rotation of the user's codes."""
    with svc.unit_of_work() as uow:
        user = accounts.get_user(uow.session, h.org_id, h.external_id)
        org = accounts.get_org(uow.session, h.org_id)
        return regeneration.queue_regeneration(uow, user, org, "enrollment", None, at, ADMIN).id


def sheet_codes(svc: Services, regeneration_id: str) -> list[str]:
    """The plaintext codes of a stored sheet, read without retrieving it."""
    with svc.unit_of_work() as uow:
        sheet = uow.session.get(Sheet, regeneration_id)
        assert sheet is not None
        return CODE_RE.findall(svc.box.decrypt_text(sheet.text_ciphertext))


def code_rows(svc: Services, user_id: str) -> list[BackupCode]:
    with svc.unit_of_work() as uow:
        return list(
            uow.session.execute(
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


def load_user(svc: Services, user_id: str) -> User:
    with svc.unit_of_work() as uow:
        found = uow.session.get(User, user_id)
        assert found is not None
        return found


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
