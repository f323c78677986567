"""Sign-in and the code format, on SQLite and PostgreSQL: a wrong check symbol is
mistyped at no cost (no hash, no verification slot, no failure, no row lock), and
sets of the older 12-symbol format keep verifying until they are replaced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from domain import admin, limits
from domain.codes import PlainCode, check_symbol_of, generate_codes
from domain.models import AuthFailure, BackupCode
from domain.slots import VerificationSlots
from infra.services import Services
from tests.integration.codes_fixtures import (
    counting,
    load_user,
    queue_rotation,
    sheet_codes,
    verify,
)
from tests.support.builders import NOW, Holder, holder, insert_codes
from tests.support.codes import WRONG_CODE, legacy_codes, wrong_secret
from tests.support.records import process


def failures(svc: Services, h: Holder) -> int:
    with svc.unit_of_work() as uow:
        return int(
            uow.session.execute(
                select(func.count())
                .select_from(AuthFailure)
                .where(AuthFailure.user_id == h.user_id, AuthFailure.kind == limits.KIND_BACKUP)
            ).scalar_one()
        )


def status_of(svc: Services, h: Holder) -> admin.CodeSet:
    user = load_user(svc, h.user_id)
    with svc.unit_of_work() as uow:
        current = admin.mfa_status(uow.session, svc, user).backup_codes
    assert current is not None
    return current


def mistypings(shown: str) -> list[str]:
    """Every wrong check symbol of a code, and a swap of two of its symbols."""
    plain = shown.replace("-", "")
    wrong_checks = [plain[:-1] + other for other in "0Z7" if other != plain[-1]]
    i = next(k for k in range(2, 14) if plain[k] != plain[k + 1])
    return [*wrong_checks, plain[:i] + plain[i + 1] + plain[i] + plain[i + 2 :]]


@contextmanager
def statements(svc: Services) -> Iterator[list[str]]:
    """The SQL the services send to the database while inside."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(svc.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(svc.engine, "before_cursor_execute", note)


def locks_of_users(sent: list[str]) -> list[str]:
    return [s for s in sent if "FROM users" in s and "FOR UPDATE" in s.upper()]


def spent(svc: Services, h: Holder) -> int:
    with svc.unit_of_work() as uow:
        return int(
            uow.session.execute(
                select(func.count())
                .select_from(BackupCode)
                .where(BackupCode.user_id == h.user_id, BackupCode.spent_at.is_not(None))
            ).scalar_one()
        )


def test_a_wrong_check_symbol_is_mistyped_without_hash_slot_failure_or_lock(
    svc: Services,
) -> None:
    h = holder(svc)
    hasher = counting(svc)
    # the process's only verification slot is taken: anything that needed one
    # would answer busy
    svc.slots = VerificationSlots(1, wait_seconds=0.01)
    with svc.slots.held(), statements(svc) as sent:
        results = [
            verify(svc, h, typo, NOW + timedelta(seconds=i))
            for i, typo in enumerate(mistypings(h.codes[0]))
        ]
    assert results and all(r.mistyped and not r.accepted for r in results)
    assert [(r.remaining, r.low) for r in results] == [(5, False)] * len(results)
    assert hasher.verifications == 0
    assert failures(svc, h) == 0
    assert sent and not locks_of_users(sent)
    assert spent(svc, h) == 0
    # the same code typed right costs one verification, in a slot, under the lock
    with statements(svc) as sent:
        assert verify(svc, h, h.codes[0], NOW + timedelta(minutes=1)).accepted
    assert hasher.verifications == 1
    assert spent(svc, h) == 1
    if svc.engine.dialect.name == "postgresql":  # SQLite's writer lock is the whole file
        assert locks_of_users(sent)


@pytest.mark.postgres
def test_a_mistyped_input_answers_while_another_transaction_holds_the_users_row(
    pg_services: Services,
) -> None:
    """A real lock, not a log: FOR NO KEY UPDATE from elsewhere blocks the sign-in's
    FOR UPDATE but not the mistyped path, which takes no lock of the user's row."""
    svc = pg_services
    h = holder(svc)
    answers: list[Any] = []

    def attempt(code: str) -> None:
        answers.append(verify(svc, h, code))

    with svc.engine.connect() as other, other.begin():
        other.execute(
            text("SELECT id FROM users WHERE id = :id FOR NO KEY UPDATE"), {"id": h.user_id}
        )
        mistyped = threading.Thread(target=attempt, args=(mistypings(h.codes[0])[0],))
        mistyped.start()
        mistyped.join(timeout=20)
        assert not mistyped.is_alive(), "the mistyped input waited for the user's row"
        assert answers[0].mistyped
        wrong = threading.Thread(target=attempt, args=(wrong_secret(h.codes[0]),))
        wrong.start()
        wrong.join(timeout=0.5)
        assert wrong.is_alive(), "a real attempt should wait for the user's row"
    wrong.join(timeout=20)
    assert not wrong.is_alive()
    assert not answers[1].mistyped and not answers[1].accepted


def test_twelve_symbols_are_mistyped_for_a_holder_of_the_current_format(
    svc: Services,
) -> None:
    h = holder(svc)
    hasher = counting(svc)
    twelve = h.codes[0].replace("-", "")[:12]
    result = verify(svc, h, twelve)
    assert result.mistyped and not result.accepted
    assert hasher.verifications == 0 and failures(svc, h) == 0


def test_an_older_12_symbol_set_verifies_and_its_typos_are_failures(svc: Services) -> None:
    h = holder(svc, codes=legacy_codes(5))
    assert all(len(c) == 14 for c in h.codes)  # XXXX-XXXX-XXXX
    hasher = counting(svc)
    accepted = verify(svc, h, h.codes[1].lower().replace("-", " "))
    assert (accepted.accepted, accepted.mistyped, accepted.remaining) == (True, False, 4)
    # an older code has no check symbol: a typo in it costs a verification and counts
    plain = h.codes[2].replace("-", "")
    typo = plain[:5] + ("A" if plain[5] != "A" else "B") + plain[6:]
    refused = verify(svc, h, typo, NOW + timedelta(seconds=1))
    assert (refused.accepted, refused.mistyped) == (False, False)
    assert hasher.verifications == 2 and failures(svc, h) == 1
    # a code of the current format, well formed, is a wrong code for this user
    assert not verify(svc, h, WRONG_CODE, NOW + timedelta(seconds=2)).mistyped
    assert status_of(svc, h).format == 12


def test_once_replaced_an_older_set_is_mistyped_and_the_new_one_verifies(
    svc: Services,
) -> None:
    h = holder(svc, codes=legacy_codes(5))
    later = NOW + timedelta(minutes=5)
    reg_id = queue_rotation(svc, h, later)
    assert process(svc, reg_id, later) == "ready"
    fresh = sheet_codes(svc, reg_id)
    assert len(fresh) == 5 and all(len(c) == 19 for c in fresh)  # XXXX-XXXX-XXXX-XXXX
    hasher = counting(svc)
    assert verify(svc, h, h.codes[0], later + timedelta(seconds=1)).mistyped
    assert hasher.verifications == 0
    assert verify(svc, h, fresh[0], later + timedelta(seconds=2)).accepted
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(
            select(BackupCode.symbols, func.count())
            .where(BackupCode.user_id == h.user_id, BackupCode.deactivated_at.is_(None))
            .group_by(BackupCode.symbols)
        ).all()
    assert [tuple(r) for r in rows] == [(16, 5)]
    assert status_of(svc, h).format == 16


def test_the_locator_finds_only_a_row_of_the_inputs_format(svc: Services) -> None:
    """A newer 16-symbol row that shares a locator with an older 12-symbol code (both
    active, which regeneration never leaves, but the lookup must not care)."""
    old = legacy_codes(1)[0]
    h = holder(svc, codes=[old])
    body = old.locator + generate_codes(1)[0].value[2:15]
    newer = PlainCode(1, body + check_symbol_of(body))
    insert_codes(svc, h.user_id, codes=[newer])
    hasher = counting(svc)
    assert verify(svc, h, old.display).accepted
    assert verify(svc, h, newer.display, NOW + timedelta(seconds=1)).accepted
    assert hasher.verifications == 2 and failures(svc, h) == 0
