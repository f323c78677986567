"""Sign-in races against PostgreSQL: one code spent once (and the double submits not
counted as failures), a regeneration never leaving two sets usable, attempt
limits that hold across processes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from domain.audit.types import EventType
from domain.codes import CodeHasher
from domain.errors import TooManyAttempts
from domain.models import AuthFailure
from domain.signin import VerifyResult, verify_backup_code
from infra.db import make_engine
from infra.services import Services
from infra.settings import Settings
from tests.integration.codes_fixtures import (
    fail,
    queue_rotation,
    row_of,
    run_together,
    sheet_codes,
    verify,
)
from tests.support.builders import NOW, Holder, holder
from tests.support.builders import SIGNIN_CTX as CTX
from tests.support.codes import WRONG_CODE
from tests.support.records import events, load_regeneration, process

pytestmark = pytest.mark.postgres

RACERS = 50


@pytest.fixture
def wide(pg_settings: Settings) -> Iterator[Services]:
    """Services whose pool lets every racer hold its own connection at once."""
    wide_settings = pg_settings.with_overrides(verify_slots=RACERS)  # no racer waits a slot
    built = Services.build(
        wide_settings, make_engine(pg_settings.database_url, pool_size=RACERS + 2)
    )
    yield built
    built.close()


def attempt(
    svc: Services, h: Holder, code: str, at: datetime = NOW, client_ip: str | None = None
) -> Callable[[threading.Barrier], VerifyResult | TooManyAttempts]:
    """A racer: its own unit of work, connected before the barrier, then one attempt."""

    def job(barrier: threading.Barrier) -> VerifyResult | TooManyAttempts:
        try:
            with svc.unit_of_work() as uow:
                uow.session.execute(text("SELECT 1"))  # the connection is taken before the start
                barrier.wait()
                return verify_backup_code(
                    uow, svc, h.org_id, h.external_id, code, at, CTX, client_ip=client_ip
                )
        except TooManyAttempts as locked:
            return locked

    return job


def failures(svc: Services, h: Holder) -> int:
    with svc.unit_of_work() as uow:
        query = select(func.count()).select_from(AuthFailure)
        return int(uow.session.execute(query.where(AuthFailure.user_id == h.user_id)).scalar_one())


@pytest.mark.parametrize("round_", range(20))
def test_fifty_concurrent_attempts_with_one_code_accept_exactly_one(
    wide: Services, round_: int
) -> None:
    h = holder(wide)
    results = run_together([attempt(wide, h, h.codes[0]) for _ in range(RACERS)])
    accepted = [r for r in results if isinstance(r, VerifyResult) and r.accepted]
    assert len(accepted) == 1, f"round {round_}: {len(accepted)} accepted"
    assert accepted[0].remaining == 4
    # the other 49 are double submits of a code of the current set: answered, not
    # refused as throttled, and not one counted as a failure
    answered = [r for r in results if isinstance(r, VerifyResult)]
    assert len(answered) == RACERS and not any(r.mistyped for r in answered)
    assert failures(wide, h) == 0
    assert len(events(wide, h.org_id, EventType.CODE_ACCEPTED)) == 1
    assert row_of(wide, h.user_id, h.codes[0]).spent_at == NOW


@pytest.mark.parametrize("round_", range(10))
def test_a_regeneration_racing_sign_ins_never_leaves_old_and_new_both_usable(
    wide: Services, round_: int
) -> None:
    h = holder(wide)
    regeneration_id = queue_rotation(wide, h)

    def rotate(barrier: threading.Barrier) -> str:
        barrier.wait()
        return process(wide, regeneration_id)  # the worker's own transaction

    racers = [attempt(wide, h, h.codes[0]) for _ in range(4)]
    results = run_together([rotate, *racers])
    assert results[0] == "ready"
    accepted = [r for r in results[1:] if isinstance(r, VerifyResult) and r.accepted]
    assert len(accepted) <= 1

    # Both transactions append to the organization's chain while holding its head
    # lock until they commit, so the chain's order is the commit order.
    kinds = [e.type for e in events(wide, h.org_id)]
    rotated_at = kinds.index(EventType.CODES_DEACTIVATED)
    accepted_at = [i for i, k in enumerate(kinds) if k == EventType.CODE_ACCEPTED]
    assert len(accepted_at) == len(accepted)
    assert all(i < rotated_at for i in accepted_at), "an old code was accepted after the rotation"

    old = row_of(wide, h.user_id, h.codes[0])
    assert old.deactivated_at is not None
    assert (old.spent_at is not None) == bool(accepted)  # spent then deactivated, or refused
    # afterwards the new set works and the old one is dead (the new code first: the
    # refused racers may have counted four failures, a fifth would lock the user)
    later = NOW + timedelta(seconds=5)
    assert verify(wide, h, sheet_codes(wide, regeneration_id)[0], later).accepted
    assert not verify(wide, h, h.codes[1], later).accepted


class GatedHasher(CodeHasher):
    """A real hasher whose verification waits at a gate, to pin one interleaving."""

    def __init__(self) -> None:
        super().__init__(memory_kib=1024, time_cost=1)
        self.entered = threading.Event()
        self.release = threading.Event()

    def verify(self, stored_hash: str, code: str) -> bool:
        self.entered.set()
        assert self.release.wait(30), "the gate was never opened"
        return super().verify(stored_hash, code)


def test_an_attempt_that_read_a_code_before_a_rotation_committed_is_refused(
    pg_settings: Settings,
) -> None:
    """The attempt finds the old row, the rotation commits while it hashes, then it
    tries to spend: the conditional UPDATE sees the deactivation and refuses."""
    signin_svc = Services.build(pg_settings)
    worker_svc = Services.build(pg_settings)
    try:
        gate = GatedHasher()
        signin_svc.hasher = gate
        h = holder(worker_svc)
        regeneration_id = queue_rotation(worker_svc, h)
        outcome: list[VerifyResult] = []
        racer = threading.Thread(target=lambda: outcome.append(verify(signin_svc, h, h.codes[0])))
        racer.start()
        assert gate.entered.wait(30)
        assert process(worker_svc, regeneration_id) == "ready"  # not blocked by the attempt
        gate.release.set()
        racer.join(30)
        assert outcome and outcome[0].accepted is False
        assert outcome[0].remaining == 5  # the new set
        assert row_of(worker_svc, h.user_id, h.codes[0]).spent_at is None
        assert load_regeneration(worker_svc, regeneration_id).status == "ready"
    finally:
        signin_svc.close()
        worker_svc.close()


def test_a_lockout_holds_across_two_processes(pg_settings: Settings) -> None:
    first, second = Services.build(pg_settings), Services.build(pg_settings)
    try:
        h = holder(first)
        for i in range(5):
            fail(first if i % 2 == 0 else second, h, 1, NOW + timedelta(seconds=i))
        for svc in (first, second):
            with pytest.raises(TooManyAttempts) as locked:
                verify(svc, h, h.codes[0], NOW + timedelta(minutes=1))
            assert locked.value.retry_after > 0
        assert row_of(first, h.user_id, h.codes[0]).spent_at is None
        assert verify(second, h, h.codes[0], NOW + timedelta(minutes=16)).accepted
    finally:
        first.close()
        second.close()


def test_concurrent_wrong_attempts_from_two_processes_get_at_most_five_verdicts(
    pg_settings: Settings,
) -> None:
    """Failures are counted under the user's lock: of 20 simultaneous wrong attempts
    from two engines, five are judged and the rest are refused as locked."""
    engines = [
        Services.build(pg_settings, make_engine(pg_settings.database_url, pool_size=12))
        for _ in range(2)
    ]
    try:
        h = holder(engines[0])
        results = run_together([attempt(engines[i % 2], h, WRONG_CODE) for i in range(20)])
        judged = [r for r in results if isinstance(r, VerifyResult)]
        locked = [r for r in results if isinstance(r, TooManyAttempts)]
        assert len(judged) == 5 and len(locked) == 15
        assert not any(r.accepted for r in judged)
        assert all(r.retry_after > 0 for r in locked)
        # one source throttled for this user: not a lockout of the user
        assert events(engines[0], h.org_id, EventType.LOCKOUT_STARTED) == []
        assert len(events(engines[0], h.org_id, EventType.SIGNIN_REFUSED)) == 15
        assert failures(engines[1], h) == 5
        # another source is not affected
        assert verify(engines[1], h, h.codes[0], NOW + timedelta(seconds=1), client_ip=OTHER)
    finally:
        for svc in engines:
            svc.close()


OTHER = "203.0.113.50"


def test_concurrent_wrong_attempts_from_many_sources_stop_at_the_users_twenty(
    pg_settings: Settings,
) -> None:
    """30 simultaneous wrong attempts, 3 from each of 10 sources (none throttled on its
    own), from two engines: 20 are judged, the user is throttled and that is announced
    once; the rest are refused."""
    engines = [
        Services.build(pg_settings, make_engine(pg_settings.database_url, pool_size=17))
        for _ in range(2)
    ]
    try:
        h = holder(engines[0])
        jobs = [
            attempt(engines[i % 2], h, WRONG_CODE, client_ip=f"192.0.2.{i % 10 + 1}")
            for i in range(30)
        ]
        results = run_together(jobs)
        judged = [r for r in results if isinstance(r, VerifyResult)]
        throttled = [r for r in results if isinstance(r, TooManyAttempts)]
        assert (len(judged), len(throttled)) == (20, 10)
        assert len(events(engines[0], h.org_id, EventType.LOCKOUT_STARTED)) == 1
        assert failures(engines[1], h) == 20
        with pytest.raises(TooManyAttempts) as later:
            verify(engines[1], h, h.codes[0], NOW + timedelta(minutes=30), client_ip=OTHER)
        assert later.value.retry_after == 30 * 60
    finally:
        for svc in engines:
            svc.close()
