"""Sign-in with a backup code (domain.signin), on SQLite: the rules one by one.
Races and cross-process lockout are in test_signin_races.py (PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from domain import admin
from domain import audit_types as types
from domain.codes import CodeHasher
from domain.errors import BackupCodesDisabled, MfaNotEnrolled, NotFound, TooManyAttempts
from domain.models import AuthFailure, BackupCode
from domain.services import Services
from tests.integration.codes_fixtures import (
    ADMIN,
    NOW,
    Holder,
    counting,
    enroll,
    events,
    fail,
    holder,
    insert_codes,
    load_user,
    new_org,
    new_user,
    row_of,
    verify,
)


def failures(svc: Services, h: Holder) -> int:
    with svc.unit_of_work() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(AuthFailure)
                .where(AuthFailure.user_id == h.user_id)
            ).scalar_one()
        )


# --- accepting and refusing ------------------------------------------------------------


def test_a_right_code_is_accepted_once_and_refused_the_second_time(services: Services) -> None:
    h = holder(services)
    first = verify(services, h, h.codes[0])
    second = verify(services, h, h.codes[0], NOW + timedelta(seconds=1))
    assert first.as_dict() == {"accepted": True, "remaining": 4, "low": False}
    assert second.as_dict() == {"accepted": False, "remaining": 4, "low": False}
    assert row_of(services, h.user_id, h.codes[0]).spent_at == NOW


@pytest.mark.parametrize(
    "shape",
    [
        lambda c: c,
        lambda c: c.lower(),
        lambda c: c.replace("-", ""),
        lambda c: c.replace("-", " ").lower(),
        lambda c: f"  \t{c}\t  ",
        lambda c: c.replace("-", "_"),
        lambda c: " ".join(c.replace("-", "")),
        lambda c: c.replace("0", "o").replace("1", "l"),  # Crockford's look-alikes
    ],
    ids=[
        "as-printed",
        "lower",
        "no-separator",
        "spaces-lower",
        "padded",
        "underscores",
        "spaced-out",
        "look-alikes",
    ],
)
def test_a_code_is_accepted_in_any_case_with_or_without_separators_and_spaces(
    services: Services, shape: object
) -> None:
    h = holder(services, 1)
    assert callable(shape)
    assert verify(services, h, shape(h.codes[0])).accepted


def test_a_wrong_code_is_refused_counted_and_audited_without_the_code(services: Services) -> None:
    h = holder(services)
    # a real code's locator with a wrong secret: the row is found, the hash says no
    wrong = h.codes[0][:5] + ("A" if h.codes[0][5] != "A" else "B") + h.codes[0][6:]
    result = verify(services, h, wrong)
    assert result.as_dict() == {"accepted": False, "remaining": 5, "low": False}
    assert failures(services, h) == 1
    [rejected] = events(services, h.org_id, types.CODE_REJECTED)
    assert rejected.outcome == types.FAILURE
    assert rejected.details == {"remaining": 5}
    assert rejected.user_id == h.external_id and rejected.actor_role == "service"
    for event in events(services, h.org_id):
        dumped = repr(event.details)
        assert wrong.replace("-", "") not in dumped and wrong not in dumped


def test_acceptance_is_audited_with_remaining_and_set_id_only(services: Services) -> None:
    h = holder(services)
    verify(services, h, h.codes[2])
    [accepted] = events(services, h.org_id, types.CODE_ACCEPTED)
    assert accepted.outcome == types.SUCCESS
    assert accepted.details == {"remaining": 4, "set_id": h.set_id}
    assert accepted.request_id == "req-signin"


def test_a_deactivated_code_is_refused(services: Services) -> None:
    h = holder(services)
    with services.unit_of_work() as session:
        admin.revoke_codes(session, h.org_id, h.external_id, ADMIN)
    result = verify(services, h, h.codes[0])
    assert result.as_dict() == {"accepted": False, "remaining": 0, "low": True}
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None


def test_a_code_of_an_older_set_is_refused_once_a_new_set_replaced_it(services: Services) -> None:
    h = holder(services)
    with services.unit_of_work() as session:
        session.execute(
            update(BackupCode).where(BackupCode.user_id == h.user_id).values(deactivated_at=NOW)
        )
    _, fresh = insert_codes(services, h.user_id, 5)
    assert not verify(services, h, h.codes[0]).accepted
    assert verify(services, h, fresh[0].display).as_dict() == {
        "accepted": True,
        "remaining": 4,
        "low": False,
    }


def test_low_is_true_when_two_or_fewer_codes_remain(services: Services) -> None:
    h = holder(services, 4)
    results = [verify(services, h, c, NOW + timedelta(seconds=i)) for i, c in enumerate(h.codes)]
    assert [(r.remaining, r.low) for r in results] == [(3, False), (2, True), (1, True), (0, True)]
    assert all(r.accepted for r in results)


@pytest.mark.parametrize("raw", ["", "ABC", "ABCD-EFGH-IJKU", "x" * 100, None, 123456789012, ["A"]])
def test_malformed_input_is_a_counted_failure_that_costs_one_verification(
    services: Services, raw: object
) -> None:
    h = holder(services)
    hasher = counting(services)
    result = verify(services, h, raw)
    assert result.as_dict() == {"accepted": False, "remaining": 5, "low": False}
    assert hasher.verifications == 1
    assert failures(services, h) == 1


@pytest.mark.parametrize("count", [1, 5, 20])
def test_every_attempt_costs_exactly_one_verification_whatever_the_number_of_codes(
    services: Services, count: int
) -> None:
    h = holder(services, count)
    hasher = counting(services)
    verify(services, h, "ZZZZ-ZZZZ-ZZZZ")  # most likely no such locator: dummy verification
    verify(services, h, h.codes[-1][:4] + "-ZZZZ-ZZZZ")  # a real locator, wrong secret
    verify(services, h, h.codes[0])  # right
    assert hasher.verifications == 3


def test_an_outdated_hash_is_rehashed_with_the_current_parameters(services: Services) -> None:
    org_id = new_org(services)
    user_id = new_user(services, org_id)
    enroll(services, user_id)
    weaker = CodeHasher(memory_kib=512, time_cost=1)
    _, codes = insert_codes(services, user_id, 2, hasher=weaker)
    h = Holder(org_id, "alice", user_id, "", tuple(c.display for c in codes))
    assert services.hasher.needs_rehash(row_of(services, user_id, h.codes[0]).hash)
    assert verify(services, h, h.codes[0]).accepted
    spent = row_of(services, user_id, h.codes[0])
    assert not services.hasher.needs_rehash(spent.hash)
    assert spent.spent_at is not None
    # the other code is left as it was (its plaintext is not known here)
    assert services.hasher.needs_rehash(row_of(services, user_id, h.codes[1]).hash)


# --- who may try ---------------------------------------------------------------------


def test_unknown_and_foreign_users_are_both_not_found_for_one_verification_each(
    services: Services,
) -> None:
    h = holder(services)
    other_org = new_org(services)
    hasher = counting(services)
    with pytest.raises(NotFound) as foreign:
        verify(services, h, h.codes[0], org_id=other_org)
    assert hasher.verifications == 1
    with pytest.raises(NotFound) as missing:
        verify(services, Holder(h.org_id, "nobody", "", "", ()), h.codes[0])
    assert hasher.verifications == 2
    assert (foreign.value.slug, foreign.value.detail) == (missing.value.slug, missing.value.detail)
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None


def test_policy_off_refuses_and_the_audited_refusal_is_committed(services: Services) -> None:
    h = holder(services, enabled=False)
    with pytest.raises(BackupCodesDisabled):
        verify(services, h, h.codes[0])
    [refused] = events(services, h.org_id, types.SIGNIN_REFUSED)
    assert (refused.outcome, refused.details) == (types.DENIED, {"reason": "backup-codes-disabled"})
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None


@pytest.mark.parametrize("enrolled", ["never", "pending"])
def test_a_user_not_enrolled_is_refused_and_the_refusal_is_committed(
    services: Services, enrolled: str
) -> None:
    if enrolled == "pending":
        h = holder(services, confirmed=False)
    else:
        org_id = new_org(services)
        h = Holder(org_id, "alice", new_user(services, org_id), "", ("ABCD-EFGH-JKMN",))
    with pytest.raises(MfaNotEnrolled):
        verify(services, h, h.codes[0])
    [refused] = events(services, h.org_id, types.SIGNIN_REFUSED)
    assert refused.details == {"reason": "mfa-not-enrolled"}


# --- lockout ------------------------------------------------------------------------


def test_five_failures_within_fifteen_minutes_lock_with_a_retry_after(services: Services) -> None:
    h = holder(services)
    fail(services, h, 4, NOW)
    assert load_user(services, h.user_id).locked_until is None
    fail(services, h, 1, NOW + timedelta(minutes=14))
    assert load_user(services, h.user_id).locked_until is not None
    assert [e.type for e in events(services, h.org_id)][-2:] == [
        types.CODE_REJECTED,
        types.LOCKOUT_STARTED,
    ]
    with pytest.raises(TooManyAttempts) as locked:
        verify(services, h, "ZZZZ-ZZZZ-ZZZZ", NOW + timedelta(minutes=15))
    assert locked.value.retry_after == 14 * 60
    assert failures(services, h) == 5  # a refused attempt is not counted again


def test_a_right_code_is_refused_while_locked_and_stays_usable(services: Services) -> None:
    h = holder(services)
    fail(services, h, 5)
    with pytest.raises(TooManyAttempts) as locked:
        verify(services, h, h.codes[0], NOW + timedelta(minutes=1))
    assert 0 < locked.value.retry_after <= 15 * 60
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None
    refused = events(services, h.org_id, types.SIGNIN_REFUSED)
    assert [e.details for e in refused] == [{"reason": "too-many-attempts"}]  # committed
    # once the window has passed the code works, and the end of the lockout is audited
    after = verify(services, h, h.codes[0], NOW + timedelta(minutes=16))
    assert after.accepted
    assert types.LOCKOUT_ENDED in [e.type for e in events(services, h.org_id)]
    assert load_user(services, h.user_id).locked_until is None


def test_a_success_resets_the_failure_count(services: Services) -> None:
    h = holder(services)
    fail(services, h, 4)
    assert verify(services, h, h.codes[0], NOW + timedelta(seconds=30)).accepted
    assert failures(services, h) == 0
    fail(services, h, 4, NOW + timedelta(minutes=1))
    assert load_user(services, h.user_id).locked_until is None
    assert verify(services, h, h.codes[1], NOW + timedelta(minutes=2)).accepted
