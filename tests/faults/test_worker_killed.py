"""A worker process killed with SIGKILL at random points of the regeneration task.

Requests arrive over HTTP (the real app, after-commit publish to RabbitMQ); a real
prefork worker process (concurrency 1) works through them and is killed after a
random 0-300 ms: on even rounds the whole worker (main process and pool, as a
crashed container), on odd rounds only its pool process (the main process sees
the worker lost and rejects the message back to the queue). RabbitMQ redelivers
what was unacknowledged; the stale republish (sent as the beat would) catches the
rest. Afterwards every request is `ready` exactly once, with one succeeded event,
one set of codes ever written for its user, and a sheet whose codes are exactly
the user's active codes.

MFA_FAULT_SEED=<n> replays one sequence of delays; MFA_SOAK=1 runs 100 rounds.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from functools import partial

import pytest
from sqlalchemy import select

from domain.models import Regeneration
from infra.services import Services
from tests.faults.stack import (
    Stack,
    WorkerProcess,
    assert_chain_ok,
    assert_one_active_set,
    assert_sheet_is_active_set,
    await_statuses,
    codes_by_user,
    seed_members,
    soak,
    statuses,
    succeeded_once,
)
from tests.support.api_world import api_world
from tests.support.polling import await_true
from workers.app import TASK_REPUBLISH_STALE

ROUNDS = soak(20, 100)
PER_ROUND = 2
CODE_COUNT = 5
MAX_DELAY = 0.3
REGENERATIONS = "/v1/me/backup-codes/regenerations"

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.mark.timeout(180 if ROUNDS <= 20 else 900)
def test_worker_killed_at_random_points_finishes_every_request_once(stack: Stack) -> None:
    seed = int(os.environ.get("MFA_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    # The real argon2 cost: with 5 codes a task lasts about 150 ms, so a kill after
    # 0-300 ms lands anywhere in it (before, inside or after its transactions).
    stack.use(MFA_ARGON2_MEMORY_KIB=str(19 * 1024), MFA_ARGON2_TIME_COST="2")
    with api_world(stack.settings, worker=False) as world:
        svc = world.services
        org_id, members = seed_members(svc, ROUNDS * PER_ROUND, code_count=CODE_COUNT)
        tokens = {m.external_id: world.token(org_id, m.external_id, "user") for m in members}

        ids: list[str] = []
        caught: Counter[str] = Counter()  # what each kill left behind, for the report
        left_over: set[str] = set()
        worker = stack.worker()
        for round_no in range(ROUNDS):
            done = _ready(svc, ids)
            for m in members[round_no * PER_ROUND : (round_no + 1) * PER_ROUND]:
                started = time.monotonic()
                got = world.call("POST", REGENERATIONS, tokens[m.external_id], {"totp": m.code()})
                assert got.status_code == 202, got.text
                assert time.monotonic() - started < 5
                ids.append(got.json["id"])
            # A task has just finished on a warm process and the next is running: kill
            # after a random delay. (Killing a fresh process before its first task
            # ends, every round, would only ever test start-up.)
            await_true(partial(_ready_beyond, svc, ids, done), 30, "a task to finish", every=0.01)
            time.sleep(rng.uniform(0, MAX_DELAY))
            whole = round_no % 2 == 0
            if whole:
                worker.kill()
            else:
                assert worker.kill_child() is not None, worker.log_tail()
            caught["whole worker" if whole else "pool process"] += 1
            # Processing now, and not left so by an earlier kill: this kill cut a task
            # between its first commit (started) and its last (ready).
            cut = _processing(svc, ids)
            caught["kills inside a task"] += bool(cut - left_over)
            left_over = cut
            if whole:
                worker = _restart(stack)

        republish = lambda: world.publisher.publish(TASK_REPUBLISH_STALE, {})  # noqa: E731
        final = await_statuses(svc, ids, timeout=90, poke=republish)
        assert set(final.values()) == {"ready"}, (seed, Counter(final.values()))
        print(f"seed {seed}: {len(ids)} requests, {dict(caught)}")
        # Enough kills must land inside a task, or this test proves nothing (most do).
        assert caught["kills inside a task"] >= ROUNDS // 5, (seed, caught)

        succeeded_once(svc, org_id, ids)
        with svc.unit_of_work() as uow:
            regs = uow.session.execute(select(Regeneration).where(Regeneration.id.in_(ids)))
            set_ids = {r.user_id: r.set_id for r in regs.scalars()}
        codes = codes_by_user(svc, org_id)
        for m in members:
            rows = codes[m.external_id]
            # Exactly one set ever written: no second run committed a second set.
            assert len(rows) == CODE_COUNT, (seed, m.external_id, len(rows))
            assert_one_active_set(rows, CODE_COUNT, set_ids[rows[0].user_id] or "")
        sheets = {}
        for i, (m, rid) in enumerate(zip(members, ids, strict=True)):
            sheets[m.external_id] = world.sheet_text(tokens[m.external_id], rid)
            # Every code's locator maps to an active code; argon2 checks every code of
            # the first sheets and one random code of each other (20 ms a check).
            assert_sheet_is_active_set(
                svc, sheets[m.external_id], codes[m.external_id], hash_all=i < 3, rng=rng
            )
        assert_chain_ok(svc, org_id)

        # One code through the sign-in endpoint: the sheet's set is the one in force.
        service = world.token(org_id, "signin-frontend", "service")
        first = members[0].external_id
        verify = f"/v1/users/{first}/backup-codes/verify"
        spent = world.call("POST", verify, service, {"code": sheets[first][0]})
        assert spent.status_code == 200, spent.text
        assert spent.json["accepted"] is True
        assert spent.json["remaining"] == CODE_COUNT - 1
        again = world.call("POST", verify, service, {"code": sheets[first][0]})
        assert again.json["accepted"] is False


def _ready(svc: Services, ids: list[str]) -> int:
    return sum(status == "ready" for status in statuses(svc, ids).values())


def _ready_beyond(svc: Services, ids: list[str], count: int) -> bool:
    return _ready(svc, ids) > count


def _processing(svc: Services, ids: list[str]) -> set[str]:
    return {rid for rid, status in statuses(svc, ids).items() if status == "processing"}


def _restart(stack: Stack) -> WorkerProcess:
    # RabbitMQ drops the dead consumer and requeues its unacknowledged message once
    # it sees the connection close.
    await_true(lambda: stack.queue_state()[1] == 0, 10, "the dead consumer to go")
    return stack.worker()
