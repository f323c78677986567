"""Sign-in with a backup code (domain.signin), on SQLite: the rules one by one,
attempt limits included. Races and limits across processes are in
test_signin_races.py (PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from api import representations
from api.errors import status_of
from domain import admin, limits
from domain.audit.types import EventType, Outcome
from domain.codes import CodeHasher
from domain.errors import (
    BackupCodesDisabled,
    BackupCodesLocked,
    InvalidRequest,
    MfaNotEnrolled,
    NotFound,
    TooManyAttempts,
)
from domain.models import AuthFailure, BackupCode
from infra.services import Services
from tests.integration.codes_fixtures import (
    counting,
    fail,
    load_user,
    queue_rotation,
    row_of,
    sheet_codes,
    verify,
)
from tests.support.builders import ADMIN_CTX as ADMIN
from tests.support.builders import NOW, Holder, enroll, holder, insert_codes, new_org, new_user
from tests.support.codes import WRONG_CODE, wrong_secret
from tests.support.records import events, process


def failures(svc: Services, h: Holder, kind: str = "backup_code") -> int:
    with svc.unit_of_work() as uow:
        return int(
            uow.session.execute(
                select(func.count())
                .select_from(AuthFailure)
                .where(AuthFailure.user_id == h.user_id, AuthFailure.kind == kind)
            ).scalar_one()
        )


# --- accepting and refusing ------------------------------------------------------------


def test_a_right_code_is_accepted_once_and_refused_the_second_time(services: Services) -> None:
    h = holder(services)
    first = verify(services, h, h.codes[0])
    second = verify(services, h, h.codes[0], NOW + timedelta(seconds=1))
    assert representations.verification(first) == {
        "accepted": True,
        "mistyped": False,
        "remaining": 4,
        "low": False,
    }
    assert representations.verification(second) == {
        "accepted": False,
        "mistyped": False,
        "remaining": 4,
        "low": False,
    }
    assert row_of(services, h.user_id, h.codes[0]).spent_at == NOW
    # a spent code of the current set (a double submit, a retry) is not a failure
    assert failures(services, h) == 0
    [rejected] = events(services, h.org_id, EventType.CODE_REJECTED)
    assert rejected.details == {"remaining": 4, "reason": "spent"}


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
    wrong = wrong_secret(h.codes[0])
    result = verify(services, h, wrong)
    assert representations.verification(result) == {
        "accepted": False,
        "mistyped": False,
        "remaining": 5,
        "low": False,
    }
    assert failures(services, h) == 1
    [rejected] = events(services, h.org_id, EventType.CODE_REJECTED)
    assert rejected.outcome == Outcome.FAILURE
    assert rejected.details == {"remaining": 5}
    assert rejected.user_id == h.external_id and rejected.actor_role == "service"
    for event in events(services, h.org_id):
        dumped = repr(event.details)
        assert wrong.replace("-", "") not in dumped and wrong not in dumped


def test_acceptance_is_audited_with_remaining_and_set_id_only(services: Services) -> None:
    h = holder(services)
    verify(services, h, h.codes[2])
    [accepted] = events(services, h.org_id, EventType.CODE_ACCEPTED)
    assert accepted.outcome == Outcome.SUCCESS
    assert accepted.details == {"remaining": 4, "set_id": h.set_id}
    assert accepted.request_id == "req-signin"


def test_a_deactivated_code_is_refused(services: Services) -> None:
    h = holder(services)
    with services.unit_of_work() as uow:
        admin.revoke_codes(uow, h.org_id, h.external_id, ADMIN)
    result = verify(services, h, h.codes[0])
    assert representations.verification(result) == {
        "accepted": False,
        "mistyped": False,
        "remaining": 0,
        "low": True,
    }
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None


def test_a_code_of_an_older_set_is_refused_once_a_new_set_replaced_it(services: Services) -> None:
    h = holder(services)
    with services.unit_of_work() as uow:
        uow.session.execute(
            update(BackupCode).where(BackupCode.user_id == h.user_id).values(deactivated_at=NOW)
        )
    _, fresh = insert_codes(services, h.user_id, 5)
    assert not verify(services, h, h.codes[0]).accepted
    assert representations.verification(verify(services, h, fresh[0].display)) == {
        "accepted": True,
        "mistyped": False,
        "remaining": 4,
        "low": False,
    }


def test_low_is_true_when_two_or_fewer_codes_remain(services: Services) -> None:
    h = holder(services, 4)
    results = [verify(services, h, c, NOW + timedelta(seconds=i)) for i, c in enumerate(h.codes)]
    assert [(r.remaining, r.low) for r in results] == [(3, False), (2, True), (1, True), (0, True)]
    assert all(r.accepted for r in results)


MISTYPED = [
    "",
    "ABC",
    "ABCD-EFGH-IJKU",
    "x" * 100,
    None,
    123456789012,
    ["A"],
    "\u017fBCD-1234-WXYZ",  # long s: Unicode upper-cases it to S
    "\u0131BCD-1234-WXYZ",  # dotless i: Unicode upper-cases it to I
]


@pytest.mark.parametrize("raw", MISTYPED)
def test_an_input_that_cannot_be_a_code_is_mistyped_costs_no_hash_and_is_no_failure(
    services: Services, raw: object
) -> None:
    h = holder(services)
    hasher = counting(services)
    result = verify(services, h, raw)
    assert representations.verification(result) == {
        "accepted": False,
        "mistyped": True,
        "remaining": 5,
        "low": False,
    }
    assert hasher.verifications == 0
    assert failures(services, h, kind="backup_code") == 0
    [rejected] = events(services, h.org_id, EventType.CODE_REJECTED)
    assert rejected.details == {"reason": "mistyped", "count": 1}


def test_a_long_s_or_dotless_i_in_a_real_code_is_mistyped(services: Services) -> None:
    h = holder(services, 1)
    code = h.codes[0].replace("-", "")
    for ascii_, trap in (("S", "\u017f"), ("I", "\u0131")):
        forged = "".join(trap if c == ascii_ else c for c in code.lower())
        forged = forged if trap in forged else trap + code[1:]
        assert verify(services, h, forged).mistyped
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None


def test_mistyped_inputs_have_a_budget_of_their_own_audited_once_a_minute(
    services: Services,
) -> None:
    h = holder(services)
    hasher = counting(services)
    for i in range(30):  # 30 in 15 minutes per source
        assert verify(services, h, "nope", NOW + timedelta(seconds=i)).mistyped
    with pytest.raises(TooManyAttempts) as throttled:
        verify(services, h, "nope", NOW + timedelta(seconds=30))
    assert 0 < throttled.value.retry_after <= 15 * 60
    # another source has a budget of its own, and a real attempt still works here
    assert verify(services, h, "nope", NOW + timedelta(seconds=31), client_ip="192.0.2.7").mistyped
    assert verify(services, h, h.codes[0], NOW + timedelta(seconds=32)).accepted
    assert hasher.verifications == 1
    batches = [
        e.details
        for e in events(services, h.org_id, EventType.CODE_REJECTED)
        if e.details.get("reason") == "mistyped"
    ]
    # seconds 0..29 from 127.0.0.1: one event at 0 (count 1); the next would come a
    # minute later with the count since; the other source's first, with its address
    assert batches == [
        {"reason": "mistyped", "count": 1},
        {"reason": "mistyped", "count": 1, "client_ip": "192.0.2.7"},
    ]
    assert verify(services, h, "nope", NOW + timedelta(seconds=61), client_ip="192.0.2.7").mistyped
    assert verify(services, h, "nope", NOW + timedelta(seconds=62), client_ip="192.0.2.7").mistyped
    assert verify(services, h, "nope", NOW + timedelta(seconds=92), client_ip="192.0.2.7").mistyped
    # at 61 and 62 s the last event (31 s) is under a minute old; at 92 s it is not:
    # one event counting the three since
    later = [e.details for e in events(services, h.org_id, EventType.CODE_REJECTED)]
    assert later[-1] == {"reason": "mistyped", "count": 3, "client_ip": "192.0.2.7"}
    assert len(later) == 3
    assert failures(services, h, kind="backup_code") == 0


@pytest.mark.parametrize("count", [1, 5, 20])
def test_every_attempt_costs_exactly_one_verification_whatever_the_number_of_codes(
    services: Services, count: int
) -> None:
    h = holder(services, count)
    hasher = counting(services)
    verify(services, h, WRONG_CODE)  # most likely no such locator: dummy verification
    verify(services, h, wrong_secret(h.codes[-1]))  # a real locator, wrong secret
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


def test_unknown_and_foreign_users_are_both_not_found_without_computing_a_hash(
    services: Services,
) -> None:
    h = holder(services)
    other_org = new_org(services)
    hasher = counting(services)
    with pytest.raises(NotFound) as foreign:
        verify(services, h, h.codes[0], org_id=other_org)
    with pytest.raises(NotFound) as missing:
        verify(services, Holder(h.org_id, "nobody", "", "", ()), h.codes[0])
    assert hasher.verifications == 0  # the 404 already says what the timing would
    assert (foreign.value.slug, foreign.value.detail) == (missing.value.slug, missing.value.detail)
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None


def test_policy_off_refuses_and_the_audited_refusal_is_committed(services: Services) -> None:
    h = holder(services, enabled=False)
    with pytest.raises(BackupCodesDisabled):
        verify(services, h, h.codes[0])
    [refused] = events(services, h.org_id, EventType.SIGNIN_REFUSED)
    assert (refused.outcome, refused.details) == (
        Outcome.DENIED,
        {"reason": "backup-codes-disabled"},
    )
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
    [refused] = events(services, h.org_id, EventType.SIGNIN_REFUSED)
    assert refused.details == {"reason": "mfa-not-enrolled"}


# --- attempt limits ---------------------------------------------------------------------

A, B = "198.51.100.7", "203.0.113.9"


def test_five_failures_from_one_source_throttle_that_source_only(services: Services) -> None:
    h = holder(services)
    fail(services, h, 4, NOW, client_ip=A)
    fail(services, h, 1, NOW + timedelta(minutes=14), client_ip=A)
    with pytest.raises(TooManyAttempts) as throttled:
        verify(services, h, WRONG_CODE, NOW + timedelta(minutes=14, seconds=5), client_ip=A)
    # the oldest of the five leaves the window 15 minutes after it came
    assert throttled.value.retry_after == 15 * 60 - (14 * 60 + 5)
    assert failures(services, h) == 5  # a refused attempt is not counted again
    # another source, and the user's TOTP, are unaffected; no lockout of the user
    assert verify(services, h, h.codes[0], NOW + timedelta(minutes=14, seconds=6), client_ip=B)
    assert events(services, h.org_id, EventType.LOCKOUT_STARTED) == []
    refused = events(services, h.org_id, EventType.SIGNIN_REFUSED)
    assert [e.details for e in refused] == [{"reason": "too-many-attempts"}]  # committed
    with services.unit_of_work() as uow:
        standing = limits.status(uow.session, load_user(services, h.user_id), NOW, services.limits)
        assert representations.limits(standing) == {
            "totp_throttled_until": None,
            "totp_locked": False,
            "backup_codes_locked": False,
        }
    # once the window has passed, the source may try again
    assert verify(services, h, h.codes[1], NOW + timedelta(minutes=16), client_ip=A).accepted


def test_ipv6_sources_are_keyed_by_their_64(services: Services) -> None:
    h = holder(services)
    for i in range(5):
        verify(
            services,
            h,
            WRONG_CODE,
            NOW + timedelta(seconds=i),
            client_ip=f"2001:db8:1:2::{i}",
        )
    with pytest.raises(TooManyAttempts):
        verify(
            services, h, h.codes[0], NOW + timedelta(seconds=9), client_ip="2001:db8:1:2:ffff::1"
        )
    assert verify(services, h, h.codes[0], NOW + timedelta(seconds=10), client_ip="2001:db8:1:3::1")


def test_twenty_failures_an_hour_across_sources_throttle_the_user_announced_once(
    services: Services,
) -> None:
    h = holder(services)
    for i in range(20):  # 4 from each of 5 sources: no source is throttled on its own
        ip = f"192.0.2.{i % 5 + 1}"
        verify(services, h, WRONG_CODE, NOW + timedelta(minutes=2 * i), client_ip=ip)
    [started] = events(services, h.org_id, EventType.LOCKOUT_STARTED)
    assert started.details == {
        "factor": "backup_codes",
        "failures": 20,
        "until": "2026-11-28T13:00:00.000Z",
    }
    at = NOW + timedelta(minutes=41)
    with pytest.raises(TooManyAttempts) as throttled:
        verify(services, h, h.codes[0], at, client_ip="192.0.2.200")  # a fresh source too
    assert throttled.value.retry_after == 19 * 60  # the rest of the hour
    assert row_of(services, h.user_id, h.codes[0]).spent_at is None
    # the hour over, the right code works, the end is audited, nothing is announced again
    assert verify(services, h, h.codes[0], NOW + timedelta(minutes=61), client_ip="192.0.2.200")
    assert len(events(services, h.org_id, EventType.LOCKOUT_STARTED)) == 1
    assert [e.details for e in events(services, h.org_id, EventType.LOCKOUT_ENDED)] == [
        {"factor": "backup_codes"}
    ]


def _hundred_failures(services: Services, h: Holder) -> None:
    """100 failures over 5 hours, 20 an hour from 5 sources (as slow as the limits allow)."""
    for i in range(100):
        at = NOW + timedelta(hours=i // 20, minutes=2 * (i % 20))
        verify(services, h, WRONG_CODE, at, client_ip=f"192.0.2.{i % 5 + 1}")


def test_a_hundred_consecutive_failures_lock_until_a_new_set(services: Services) -> None:
    h = holder(services)
    _hundred_failures(services, h)
    [permanent] = events(services, h.org_id, EventType.LOCKOUT_PERMANENT)
    assert permanent.details == {"factor": "backup_codes", "failures": 100}
    assert len(events(services, h.org_id, EventType.LOCKOUT_STARTED)) == 5  # once each hour
    much_later = NOW + timedelta(days=3)  # the passing of a window resets nothing
    with pytest.raises(BackupCodesLocked) as locked:
        verify(services, h, h.codes[0], much_later, client_ip="192.0.2.99")
    assert status_of(locked.value) == 429 and "retry_after" not in locked.value.extra
    assert locked.value.retry_after is None
    with services.unit_of_work() as uow:
        shown = limits.status(
            uow.session, load_user(services, h.user_id), much_later, services.limits
        )
    assert shown.backup_codes_locked is True and shown.totp_locked is False
    # a new set (the regeneration pipeline) ends the lock
    reg_id = queue_rotation(services, h, much_later)
    assert process(services, reg_id, much_later) == "ready"
    fresh = sheet_codes(services, reg_id)
    assert verify(services, h, fresh[0], much_later + timedelta(seconds=1)).accepted


def test_the_window_passing_does_not_reset_the_consecutive_count_a_success_does(
    services: Services,
) -> None:
    h = holder(services)
    for i in range(99):
        at = NOW + timedelta(hours=i // 20, minutes=2 * (i % 20))
        verify(services, h, WRONG_CODE, at, client_ip=f"192.0.2.{i % 5 + 1}")
    later = NOW + timedelta(days=1)
    assert verify(services, h, h.codes[0], later).accepted  # resets the count to 0
    for i in range(99):
        at = later + timedelta(hours=1 + i // 20, minutes=2 * (i % 20))
        verify(services, h, WRONG_CODE, at, client_ip=f"192.0.2.{i % 5 + 1}")
    assert events(services, h.org_id, EventType.LOCKOUT_PERMANENT) == []
    assert verify(services, h, h.codes[1], later + timedelta(days=1)).accepted


@pytest.mark.parametrize("how", ["unlock", "reset"])
def test_an_unlock_or_a_reset_clears_the_lock(services: Services, how: str) -> None:
    h = holder(services)
    _hundred_failures(services, h)
    with services.unit_of_work() as uow:
        if how == "unlock":
            admin.unlock(uow, h.org_id, h.external_id, ADMIN)
        else:
            admin.reset_mfa(uow, h.org_id, h.external_id, ADMIN)
    assert failures(services, h) == 0
    if how == "unlock":
        [cleared] = events(services, h.org_id, EventType.LOCKOUT_CLEARED)
        assert cleared.details == {"factors": ["backup_codes"]}
        assert verify(services, h, h.codes[0], NOW + timedelta(days=1)).accepted
    else:
        with pytest.raises(MfaNotEnrolled):  # not BackupCodesLocked: the lock is gone
            verify(services, h, h.codes[0], NOW + timedelta(days=1))


def test_a_success_resets_the_count_of_its_source(services: Services) -> None:
    h = holder(services)
    fail(services, h, 4)
    assert verify(services, h, h.codes[0], NOW + timedelta(seconds=30)).accepted
    assert failures(services, h) == 0
    fail(services, h, 4, NOW + timedelta(minutes=1))
    assert verify(services, h, h.codes[1], NOW + timedelta(minutes=2)).accepted


def test_client_ip_and_user_agent_are_checked_and_recorded(services: Services) -> None:
    h = holder(services)
    with pytest.raises(InvalidRequest) as bad_ip:
        verify(services, h, h.codes[0], client_ip="999.1.1.1")
    assert bad_ip.value.field == "client_ip"
    with pytest.raises(InvalidRequest) as bad_agent:
        verify(services, h, h.codes[0], user_agent="x" * 513)
    assert bad_agent.value.field == "user_agent"
    assert verify(services, h, h.codes[0], client_ip="2001:DB8::1", user_agent="Firefox/140")
    [accepted] = events(services, h.org_id, EventType.CODE_ACCEPTED)
    assert accepted.details["client_ip"] == "2001:db8::1"
    assert accepted.details["user_agent"] == "Firefox/140"


def test_the_mistyped_budget_is_per_source_across_the_users_it_names(
    services: Services,
) -> None:
    """A scatter of random inputs from one source over many users spends one budget:
    30 in 15 minutes per source, whichever users they name."""
    first = holder(services)
    others = [holder(services, org_id=first.org_id, external_id=f"u{n}") for n in range(2)]
    targets = [first, *others]
    for i in range(30):
        assert verify(services, targets[i % 3], "nope", NOW + timedelta(seconds=i)).mistyped
    with pytest.raises(TooManyAttempts):
        verify(services, others[0], "nope", NOW + timedelta(seconds=30))
    # another source is untouched, and the throttle is the mistyped budget's alone
    assert verify(services, others[1], "nope", NOW + timedelta(seconds=31), client_ip="192.0.2.9")
    assert verify(services, first, first.codes[0], NOW + timedelta(seconds=32)).accepted
    batches = [
        e.details
        for e in events(services, first.org_id, EventType.CODE_REJECTED)
        if e.details.get("reason") == "mistyped"
    ]
    # audited once per source per minute, whichever user: one event for 127.0.0.1
    assert [b.get("client_ip") for b in batches] == [None, "192.0.2.9"]
