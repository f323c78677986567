"""A backlog: 1,000 regenerations accepted while no worker runs, then drained by a
real worker process whose clock reads five minutes later than the clock that
accepted them.

Each user has a TOTP secret of their own and submits the code of the moment; the
requests go to RabbitMQ through the after-commit publisher. By the time the
worker judges them, every code is ten steps outside the +-1 step window of its
own "now": only judging for `accepted_at` (docs/api.md) lets them through, so none may
fail. (The clock offset stands for a five-minute queue without waiting for it.)

MFA_SOAK=1 submits 5,000.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from domain import totp as otp
from domain.audit.types import EventType
from domain.models import Regeneration
from tests.faults.stack import (
    Stack,
    assert_chain_ok,
    assert_one_active_set,
    await_statuses,
    codes_by_user,
    event_counts,
    publishing_services,
    seed_members,
    soak,
    statuses,
    submit,
    succeeded_once,
)
from tests.support.polling import await_true

COUNT = soak(1000, 5000)
CLOCK_OFFSET = 300  # seconds: ten 30 s steps, far outside the +-1 step window
BATCH = 100

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.mark.timeout(240 if COUNT <= 1000 else 1200)
def test_a_backlog_is_judged_for_when_each_request_was_accepted(stack: Stack) -> None:
    stack.use(MFA_STALE_AFTER_SECONDS="3600")  # nothing republished behind our back
    with publishing_services(stack.settings) as svc:
        started = time.monotonic()
        org_id, members = seed_members(svc, COUNT, code_count=1)
        seeded = time.monotonic()
        ids: list[str] = []
        for i in range(0, COUNT, BATCH):
            ids += submit(svc, members[i : i + BATCH])
        submitted = time.monotonic()

        # All of it waits in RabbitMQ, none of it touched.
        # The last publishes may still be on their way on a busy machine.
        await_true(lambda: stack.queue_state() == (COUNT, 0), 60, f"{COUNT} messages queued")
        assert set(statuses(svc, ids).values()) == {"queued"}

        stack.worker(concurrency=2, clock_offset=CLOCK_OFFSET)
        final = await_statuses(svc, ids, timeout=180)
        drained = time.monotonic()
        print(
            f"backlog of {COUNT}: seeded {seeded - started:.1f}s, submitted "
            f"{submitted - seeded:.1f}s, drained {drained - submitted:.1f}s "
            f"({COUNT / (drained - submitted):.0f}/s incl. worker start)"
        )
        assert Counter(final.values()) == {"ready": COUNT}
        assert not event_counts(svc, org_id, EventType.REGENERATION_FAILED)
        assert not event_counts(svc, org_id, EventType.TOTP_REJECTED)
        succeeded_once(svc, org_id, ids)

        with svc.unit_of_work() as uow:
            regs = list(
                uow.session.execute(
                    select(Regeneration).where(Regeneration.org_id == org_id)
                ).scalars()
            )
        by_user = {r.user_id: r for r in regs}
        late = min(r.completed_at - r.accepted_at for r in regs if r.completed_at)
        # The worker's clock was the late one: judged now, each code would be stale.
        assert late >= timedelta(seconds=CLOCK_OFFSET)
        codes = codes_by_user(svc, org_id)
        for m in members:
            rows = codes[m.external_id]
            reg = by_user[rows[0].user_id]
            assert_one_active_set(rows, 1, reg.set_id or "")
            assert reg.completed_at is not None
            # The code this user sent is valid at acceptance and its step lies outside
            # the window around the moment the worker judged it.
            sent = m.code(reg.accepted_at)
            assert otp.judge(m.secret, sent, reg.accepted_at, None).verdict is otp.Verdict.ACCEPTED
            assert otp.step_at(reg.completed_at) - otp.step_at(reg.accepted_at) > otp.WINDOW
        assert_chain_ok(svc, org_id)
