"""The regeneration pipeline against SQLite and PostgreSQL: request, process, retrieve."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import datetime, timedelta

import pytest
from pypdf import PdfReader
from sqlalchemy import delete, select, text

from api import representations
from domain import accounts, audit, limits, outbox, policy, regeneration
from domain.audit.types import EventType, Outcome
from domain.codes import normalise
from domain.errors import (
    BackupCodesDisabled,
    DomainError,
    IdempotencyKeyReused,
    InvalidRequest,
    MfaNotEnrolled,
    NotFound,
    NotReady,
    RegenerationFailed,
    RegenerationPending,
    SheetExpired,
    SheetGone,
    TooManyAttempts,
)
from domain.models import AuthFailure, BackupCode, OutboxMessage, Regeneration, TotpEnrollment
from domain.totp import Verdict, judge
from infra.services import Services
from tests.integration.pipeline_helpers import (
    NOW,
    enrolled,
    request,
    retrieve,
    retrieve_forms,
    start,
    stored_sheet,
    user,
    wrong_code,
)
from tests.support.builders import USER_CTX as CTX
from tests.support.builders import Person, new_org, new_user
from tests.support.leaks import numbers_held
from tests.support.records import events, process
from tests.support.records import load_regeneration as load

T = NOW + timedelta(minutes=2)  # well after the step that confirmed the enrollment


def _codes(svc: Services, person: Person) -> list[BackupCode]:
    with svc.unit_of_work() as uow:
        return list(
            uow.session.execute(
                select(BackupCode)
                .where(BackupCode.user_id == user(uow.session, person.org_id).id)
                .order_by(BackupCode.generation, BackupCode.position)
            ).scalars()
        )


def _ready(svc: Services, at: datetime = T) -> tuple[Person, str]:
    person, _ = enrolled(svc)
    reg_id = request(svc, person, at).regeneration.id
    assert process(svc, reg_id, at) == "ready"
    return person, reg_id


# --- processing ---------------------------------------------------------------


def test_stored_codes_are_argon2id_hashes_of_the_codes_on_the_sheet(svc: Services) -> None:
    person, reg_id = _ready(svc)
    sheet = stored_sheet(svc, reg_id)
    assert sheet is not None
    plain = [normalise(line) for line in sheet[1].splitlines()]
    assert len(plain) == 5 and all(plain)
    rows = [c for c in _codes(svc, person) if c.deactivated_at is None]
    assert len(rows) == 5
    assert {r.set_id for r in rows} == {load(svc, reg_id).set_id}
    by_locator = {r.locator: r for r in rows}
    for code in plain:
        assert code is not None
        row = by_locator[code[:2]]
        assert row.hash.startswith("$argon2id$")
        assert code not in row.hash
        assert svc.hasher.verify(row.hash, code)
    assert not svc.hasher.verify(rows[0].hash, plain[1] or "")


def test_a_regeneration_deactivates_every_earlier_code_spent_or_not(svc: Services) -> None:
    person, first_id = enrolled(svc)
    assert first_id is not None
    assert process(svc, first_id, NOW) == "ready"
    with svc.unit_of_work() as uow:
        owner = user(uow.session, person.org_id).id
        spent = uow.session.execute(
            select(BackupCode).where(BackupCode.user_id == owner, BackupCode.position == 1)
        ).scalar_one()
        spent.spent_at = NOW
    reg_id = request(svc, person, T).regeneration.id
    assert process(svc, reg_id, T) == "ready"
    rows = _codes(svc, person)
    old = [r for r in rows if r.generation == 1]
    new = [r for r in rows if r.generation == 2]
    assert len(old) == 5 and all(r.deactivated_at == T for r in old)
    assert len(new) == 5 and all(r.deactivated_at is None for r in new)
    assert [e.details for e in events(svc, person.org_id, EventType.CODES_DEACTIVATED)] == [
        {"count": 5, "regeneration_id": reg_id}
    ]


def test_a_time_step_is_accepted_only_once_and_a_replay_is_a_failure(svc: Services) -> None:
    person, _ = enrolled(svc)
    first = request(svc, person, T).regeneration.id
    assert process(svc, first, T) == "ready"
    second = request(svc, person, T + timedelta(seconds=1)).regeneration.id  # same step
    assert process(svc, second, T + timedelta(seconds=1)) == "failed"
    assert load(svc, second).failure == "totp-replayed"
    replays = events(svc, person.org_id, EventType.TOTP_REPLAYED)
    assert [e.details for e in replays] == [{"regeneration_id": second}]
    with svc.unit_of_work() as uow:
        owner = user(uow.session, person.org_id).id
        kinds = uow.session.execute(select(AuthFailure.kind).where(AuthFailure.user_id == owner))
        assert list(kinds.scalars()) == ["totp"]  # counted against the TOTP budget


def test_a_code_valid_when_accepted_succeeds_when_processed_five_minutes_later(
    svc: Services,
) -> None:
    person, _ = enrolled(svc)
    code = person.code(T)
    late = T + timedelta(minutes=5)
    assert judge(person.secret, code, late, None).verdict is Verdict.INVALID  # stale by then
    reg_id = request(svc, person, T, code=code).regeneration.id
    assert process(svc, reg_id, late) == "ready"
    reg = load(svc, reg_id)
    assert (reg.accepted_at, reg.completed_at) == (T, late)


def test_processing_twice_changes_nothing(svc: Services) -> None:
    person, reg_id = _ready(svc)
    before = (
        [(c.id, c.hash, c.deactivated_at) for c in _codes(svc, person)],
        len(events(svc, person.org_id)),
        stored_sheet(svc, reg_id),
        representations.regeneration(load(svc, reg_id)),
    )
    assert process(svc, reg_id, T + timedelta(minutes=1)) == "ready"
    after = (
        [(c.id, c.hash, c.deactivated_at) for c in _codes(svc, person)],
        len(events(svc, person.org_id)),
        stored_sheet(svc, reg_id),
        representations.regeneration(load(svc, reg_id)),
    )
    assert after == before
    retrieve(svc, person, reg_id, "text", T)
    assert process(svc, reg_id, T + timedelta(minutes=2)) == "retrieved"


def test_an_unknown_id_is_reported_missing(svc: Services) -> None:
    assert process(svc, "00000000-0000-4000-8000-000000000000", T) == regeneration.MISSING


def test_backup_codes_turned_off_before_processing_fail_the_request(svc: Services) -> None:
    person, _ = enrolled(svc)
    reg_id = request(svc, person, T).regeneration.id
    with svc.unit_of_work() as uow:
        policy.set_policy(uow, accounts.get_org(uow.session, person.org_id), False, 5, audit.CLI)
    assert process(svc, reg_id, T) == "failed"
    reg = load(svc, reg_id)
    assert (reg.failure, reg.totp_ciphertext, reg.completed_at) == (
        "backup-codes-disabled",
        None,
        T,
    )
    # the first set is left as it was, and no sheet was made
    assert {c.generation for c in _codes(svc, person) if c.deactivated_at is None} == {1}
    assert stored_sheet(svc, reg_id) is None
    failed = events(svc, person.org_id, EventType.REGENERATION_FAILED)
    assert [e.details for e in failed] == [
        {"regeneration_id": reg_id, "reason": "backup-codes-disabled"}
    ]


def test_an_enrollment_removed_before_processing_fails_mfa_not_enrolled(svc: Services) -> None:
    person, _ = enrolled(svc)
    reg_id = request(svc, person, T).regeneration.id
    with svc.unit_of_work() as uow:
        uow.session.execute(
            delete(TotpEnrollment).where(
                TotpEnrollment.user_id == user(uow.session, person.org_id).id
            )
        )
    assert process(svc, reg_id, T) == "failed"
    assert load(svc, reg_id).failure == "mfa-not-enrolled"


def test_a_wrong_code_fails_is_counted_and_wiped(svc: Services) -> None:
    person, _ = enrolled(svc)
    reg_id = request(svc, person, T, code=wrong_code(person, T)).regeneration.id
    assert load(svc, reg_id).totp_ciphertext is not None
    assert process(svc, reg_id, T) == "failed"
    reg = load(svc, reg_id)
    assert (reg.failure, reg.totp_ciphertext) == ("invalid-totp", None)
    with svc.unit_of_work() as uow:
        kinds = uow.session.execute(
            select(AuthFailure.kind).where(
                AuthFailure.user_id == user(uow.session, person.org_id).id
            )
        ).scalars()
        assert list(kinds) == ["totp"]
    assert len(events(svc, person.org_id, EventType.TOTP_REJECTED)) == 1


def test_a_request_queued_before_a_throttle_is_judged_on_its_own_merits(svc: Services) -> None:
    """Failures that land between acceptance and the worker (an attacker's, from
    enrollment or another factor) throttle later requests, not the queued one."""
    person, _ = enrolled(svc)
    good = request(svc, person, T).regeneration.id
    with svc.unit_of_work() as uow:
        locked = uow.lock_user(user(uow.session, person.org_id))
        for i in range(5):
            limits.record_failure(
                uow, locked, limits.TOTP, None, T + timedelta(seconds=i), CTX, svc.limits
            )
    assert len(events(svc, person.org_id, EventType.LOCKOUT_STARTED)) == 1
    assert process(svc, good, T + timedelta(seconds=10)) == "ready"
    assert load(svc, good).totp_ciphertext is None
    # the success resets the TOTP window; an intake after it is not throttled
    later = T + timedelta(minutes=1)
    assert request(svc, person, later, code=person.code(later)).created


def test_the_totp_is_stored_encrypted_and_wiped_once_judged(svc: Services) -> None:
    person, _ = enrolled(svc)
    code = person.code(T)
    reg_id = request(svc, person, T, code=code).regeneration.id
    stored = load(svc, reg_id).totp_ciphertext
    assert stored is not None and code.encode() not in stored
    assert svc.box.decrypt_text(stored) == code
    process(svc, reg_id, T)
    assert load(svc, reg_id).totp_ciphertext is None


def test_the_pdf_shows_every_code_of_the_text_form(svc: Services) -> None:
    _, reg_id = _ready(svc)
    sheet = stored_sheet(svc, reg_id)
    assert sheet is not None
    pdf, plain = sheet
    assert pdf.startswith(b"%PDF")
    page_text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    codes = plain.splitlines()
    assert len(codes) == 5
    for code in codes:
        assert code in page_text
    assert str(load(svc, reg_id).set_id) in page_text


def test_audit_events_record_the_pipeline_without_secrets(svc: Services) -> None:
    person, first_id = enrolled(svc)
    assert first_id is not None
    process(svc, first_id, NOW)
    first_codes = stored_sheet(svc, first_id)
    reg_id = request(svc, person, T).regeneration.id
    with svc.unit_of_work() as uow:
        assert regeneration.mark_started(uow, reg_id, T)
    process(svc, reg_id, T)
    sheet = stored_sheet(svc, reg_id)
    assert sheet is not None and first_codes is not None
    retrieve(svc, person, reg_id, "pdf", T)
    bad = request(svc, person, T + timedelta(minutes=1), code=wrong_code(person, T)).regeneration.id
    process(svc, bad, T + timedelta(minutes=1))

    trail = events(svc, person.org_id)
    kinds = [e.type for e in trail]
    for expected in (
        EventType.REGENERATION_REQUESTED,
        EventType.REGENERATION_STARTED,
        EventType.CODES_DEACTIVATED,
        EventType.SHEET_RENDERED,
        EventType.REGENERATION_SUCCEEDED,
        EventType.SHEET_RETRIEVED,
        EventType.TOTP_REJECTED,
        EventType.REGENERATION_FAILED,
    ):
        assert expected in kinds
    succeeded = [e for e in trail if e.type == EventType.REGENERATION_SUCCEEDED][-1]
    assert succeeded.details == {
        "regeneration_id": reg_id,
        "set_id": load(svc, reg_id).set_id,
        "code_count": 5,
    }
    # the worker's events carry the requester's context
    assert (succeeded.actor_principal_id, succeeded.request_id) == ("alice", "req-1")
    secrets_ = [person.secret, person.code(T), wrong_code(person, T), person.code(NOW)]
    for plain in (first_codes[1], sheet[1]):
        for line in plain.splitlines():
            secrets_ += [line, normalise(line) or line]
    dumped = json.dumps([[e.details, e.user_agent, e.request_id, e.actor_token_id] for e in trail])
    # A TOTP value as a number of its own: a uuid's hex may hold its six digits.
    totps = {s for s in secrets_ if s.isdigit()}
    assert numbers_held(dumped, totps) == set()
    for secret in set(secrets_) - totps:
        assert secret not in dumped, secret[:3]


def test_mark_started_moves_queued_to_processing_once(svc: Services) -> None:
    person, _ = enrolled(svc)
    reg_id = request(svc, person, T).regeneration.id
    with svc.unit_of_work() as uow:
        assert regeneration.mark_started(uow, reg_id, T + timedelta(seconds=1))
    with svc.unit_of_work() as uow:
        assert not regeneration.mark_started(uow, reg_id, T + timedelta(seconds=2))
    reg = load(svc, reg_id)
    assert (reg.status, reg.started_at) == ("processing", T + timedelta(seconds=1))
    assert len(events(svc, person.org_id, EventType.REGENERATION_STARTED)) == 1
    assert process(svc, reg_id, T + timedelta(seconds=3)) == "ready"
    assert load(svc, reg_id).started_at == T + timedelta(seconds=1)


# --- intake -------------------------------------------------------------------


def test_a_request_is_queued_with_its_outbox_row_and_event(svc: Services) -> None:
    person, _ = enrolled(svc)
    with svc.unit_of_work() as uow:
        outcome = regeneration.request_regeneration(
            uow, svc, user(uow.session, person.org_id), person.code(T), None, T, CTX
        )
        noted = [queued.id for queued in uow.outbox]
    reg = outcome.regeneration
    assert outcome.created
    body = representations.regeneration(reg)
    assert (body["status"], body["reason"], body["code_count"]) == ("queued", "regeneration", 5)
    assert (reg.accepted_at, reg.dispatched_at, reg.actor["request_id"]) == (T, T, "req-1")
    with svc.unit_of_work() as uow:
        message = uow.session.get(OutboxMessage, noted[-1])
        assert message is not None
        assert (message.task, message.args, message.published_at) == (
            outbox.TASK_PROCESS_REGENERATION,
            {"regeneration_id": reg.id},
            None,
        )
    requested = events(svc, person.org_id, EventType.REGENERATION_REQUESTED)[-1]
    assert requested.details == {
        "regeneration_id": reg.id,
        "reason": "regeneration",
        "code_count": 5,
    }


@pytest.mark.parametrize("bad", ["12345", "1234567", " 12345", "12345x", "١٢٣٤٥٦", 123456, None])
def test_a_malformed_totp_is_refused_and_only_the_refusal_is_written(
    svc: Services, bad: object
) -> None:
    person, _ = enrolled(svc)
    before = events(svc, person.org_id)
    with pytest.raises(InvalidRequest) as info:
        request(svc, person, T, code=bad)
    assert info.value.field == "totp"
    after = events(svc, person.org_id)
    assert len(after) == len(before) + 1
    # The user's wrong input: a failure, as a wrong TOTP is (a policy refusal is denied).
    assert (after[-1].type, after[-1].outcome) == (EventType.REGENERATION_REFUSED, Outcome.FAILURE)
    assert after[-1].details == {"reason": "invalid-request"}
    with svc.unit_of_work() as uow:
        owner = user(uow.session, person.org_id)
        # Only the enrollment's regeneration: the refused request left no row.
        assert len(uow.session.scalars(select(Regeneration).filter_by(user_id=owner.id)).all()) == 1


def _refusal(svc: Services, person: Person, error: type[DomainError]) -> DomainError:
    """The request fails with `error`, and its refusal is on record (committed)."""
    with pytest.raises(error) as info:
        request(svc, person, T)
    last = events(svc, person.org_id)[-1]
    assert (last.type, last.outcome) == (EventType.REGENERATION_REFUSED, Outcome.DENIED)
    assert last.details == {"reason": error.slug}
    return info.value


def test_refused_when_backup_codes_are_off_and_the_refusal_is_kept(svc: Services) -> None:
    person, _ = enrolled(svc, enabled=False)
    assert isinstance(_refusal(svc, person, BackupCodesDisabled), BackupCodesDisabled)


def test_refused_when_not_enrolled(svc: Services) -> None:
    org_id = new_org(svc)
    new_user(svc, org_id)
    assert isinstance(
        _refusal(svc, Person(org_id, "alice", "A" * 32), MfaNotEnrolled), MfaNotEnrolled
    )
    pending = Person(org_id, "alice", start(svc, org_id))  # pending is not enrolled
    assert isinstance(_refusal(svc, pending, MfaNotEnrolled), MfaNotEnrolled)


def test_refused_while_locked_out(svc: Services) -> None:
    person, _ = enrolled(svc)
    with svc.unit_of_work() as uow:
        locked = uow.lock_user(user(uow.session, person.org_id))
        for i in range(5):
            limits.record_failure(
                uow, locked, limits.TOTP, None, T - timedelta(seconds=5 - i), CTX, svc.limits
            )
    error = _refusal(svc, person, TooManyAttempts)
    assert isinstance(error, TooManyAttempts) and 0 < error.retry_after <= 900


def test_a_second_request_while_one_is_pending_is_refused_naming_it(svc: Services) -> None:
    person, _ = enrolled(svc)
    pending = request(svc, person, T).regeneration.id
    error = _refusal(svc, person, RegenerationPending)
    assert isinstance(error, RegenerationPending)
    assert error.regeneration_id == pending  # the API names it in Location
    with svc.unit_of_work() as uow:
        assert regeneration.mark_started(uow, pending, T)  # processing is pending too
    _refusal(svc, person, RegenerationPending)
    assert process(svc, pending, T) == "ready"
    later = T + timedelta(minutes=1)
    assert request(svc, person, later, code=person.code(later)).created


def test_a_replay_loop_queues_a_bounded_number_of_regenerations(svc: Services) -> None:
    """Resubmitting the current, already used code in a loop: each replay is a TOTP
    failure, so after 5 the intake refuses with 429 (it used to queue them all)."""
    person, _ = enrolled(svc)
    used = person.code(T)
    assert process(svc, request(svc, person, T, code=used).regeneration.id, T) == "ready"
    queued, throttled = 0, 0
    for i in range(1, 21):  # bounded: 20 attempts within the same 15 minutes
        at = T + timedelta(seconds=i)
        try:
            reg_id = request(svc, person, at, code=used).regeneration.id
        except TooManyAttempts:
            throttled += 1
            continue
        queued += 1
        assert process(svc, reg_id, at) == "failed"
        assert load(svc, reg_id).failure == "totp-replayed"
    assert (queued, throttled) == (5, 15)
    assert len(events(svc, person.org_id, EventType.LOCKOUT_STARTED)) == 1


def test_same_idempotency_key_and_body_answer_the_same_regeneration(svc: Services) -> None:
    person, _ = enrolled(svc)
    code = person.code(T)
    first = request(svc, person, T, code=code, key="k-1")
    again = request(svc, person, T + timedelta(seconds=5), code=code, key="k-1")
    assert (first.created, again.created) == (True, False)
    assert again.regeneration.id == first.regeneration.id
    process(svc, first.regeneration.id, T)
    later = request(svc, person, T + timedelta(hours=23), code=code, key="k-1")
    assert later.regeneration.id == first.regeneration.id and later.regeneration.status == "ready"
    stored = load(svc, first.regeneration.id).body_fingerprint
    assert stored is not None and code not in stored
    assert (
        len(events(svc, person.org_id, EventType.REGENERATION_REQUESTED)) == 2
    )  # enrollment + one


def test_same_idempotency_key_with_another_body_is_refused(svc: Services) -> None:
    person, _ = enrolled(svc)
    request(svc, person, T, key="k-2")
    with pytest.raises(IdempotencyKeyReused):
        request(svc, person, T, code=wrong_code(person, T), key="k-2")
    assert events(svc, person.org_id)[-1].details == {"reason": "idempotency-key-reused"}


def test_an_idempotency_key_older_than_a_day_starts_a_new_regeneration(svc: Services) -> None:
    person, _ = enrolled(svc)
    code = person.code(T)
    first = request(svc, person, T, code=code, key="k-3")
    process(svc, first.regeneration.id, T)
    day_later = T + timedelta(hours=24, seconds=1)
    fresh = request(svc, person, day_later, code=person.code(day_later), key="k-3")
    assert fresh.created and fresh.regeneration.id != first.regeneration.id
    assert load(svc, first.regeneration.id).idempotency_key is None
    assert load(svc, fresh.regeneration.id).idempotency_key == "k-3"


def test_idempotency_keys_are_scoped_to_the_user(svc: Services) -> None:
    alice, _ = enrolled(svc)
    bob, _ = enrolled(svc, org_id=alice.org_id, external_id="bob")
    a = request(svc, alice, T, key="shared")
    b = request(svc, bob, T, key="shared")
    assert b.created and a.regeneration.id != b.regeneration.id


def test_stale_requests_are_handed_out_once_per_deadline(svc: Services) -> None:
    person, enrollment_reg = enrolled(svc)
    assert enrollment_reg is not None
    process(svc, enrollment_reg, NOW)
    reg_id = request(svc, person, T).regeneration.id
    with svc.unit_of_work() as uow:
        assert reg_id not in regeneration.stale_regenerations(
            uow.session, T + timedelta(seconds=30), 60
        )
    with svc.unit_of_work() as uow:
        assert reg_id in regeneration.stale_regenerations(
            uow.session, T + timedelta(seconds=61), 60
        )
    with svc.unit_of_work() as uow:
        handed = regeneration.stale_regenerations(uow.session, T + timedelta(seconds=62), 60)
        assert reg_id not in handed and enrollment_reg not in handed
    reg = load(svc, reg_id)
    assert (reg.dispatched_at, reg.dispatch_count) == (T + timedelta(seconds=61), 2)


# --- status and retrieval -----------------------------------------------------


def test_get_regeneration_is_not_found_for_anything_not_the_users(svc: Services) -> None:
    alice, _ = enrolled(svc)
    bob, _ = enrolled(svc, org_id=alice.org_id, external_id="bob")
    reg_id = request(svc, alice, T).regeneration.id
    with svc.unit_of_work() as uow:
        assert (
            regeneration.get_regeneration(uow.session, user(uow.session, alice.org_id), reg_id).id
            == reg_id
        )
        for probe in (reg_id, "not-a-uuid", "' OR 1=1 --", "", "0" * 5000):
            with pytest.raises(NotFound):
                regeneration.get_regeneration(
                    uow.session, user(uow.session, bob.org_id, "bob"), probe
                )
    with pytest.raises(NotFound):
        retrieve(svc, bob, reg_id, "pdf", T)


def test_the_sheet_is_served_once_then_gone(svc: Services) -> None:
    person, reg_id = _ready(svc)
    expected = stored_sheet(svc, reg_id)
    assert expected is not None
    assert retrieve(svc, person, reg_id, "text", T).decode() == expected[1]
    with pytest.raises(SheetGone):
        retrieve(svc, person, reg_id, "pdf", T)
    with pytest.raises(SheetGone):
        retrieve(svc, person, reg_id, "text", T)
    assert stored_sheet(svc, reg_id) is None
    reg = load(svc, reg_id)
    assert (reg.status, reg.retrieved_at) == ("retrieved", T)
    assert [e.details for e in events(svc, person.org_id, EventType.SHEET_RETRIEVED)] == [
        {"regeneration_id": reg_id, "format": "text"}
    ]
    refused = events(svc, person.org_id, EventType.SHEET_RETRIEVAL_REFUSED)
    assert [(e.outcome, e.details["reason"]) for e in refused] == [
        (Outcome.DENIED, "sheet-gone"),
        (Outcome.DENIED, "sheet-gone"),
    ]


def test_the_pdf_form_is_the_stored_pdf(svc: Services) -> None:
    person, reg_id = _ready(svc)
    expected = stored_sheet(svc, reg_id)
    assert expected is not None
    assert retrieve(svc, person, reg_id, "pdf", T) == expected[0]


def test_a_sheet_not_ready_or_failed_is_refused_and_audited(svc: Services) -> None:
    person, _ = enrolled(svc)
    failed = request(svc, person, T, code=wrong_code(person, T)).regeneration.id
    process(svc, failed, T)
    with pytest.raises(RegenerationFailed):
        retrieve(svc, person, failed, "pdf", T)
    queued = request(svc, person, T).regeneration.id
    with pytest.raises(NotReady) as info:
        retrieve(svc, person, queued, "pdf", T)
    assert info.value.retry_after == 1
    with pytest.raises(InvalidRequest):
        retrieve(svc, person, queued, "docx", T)
    refused = events(svc, person.org_id, EventType.SHEET_RETRIEVAL_REFUSED)
    assert [e.details["reason"] for e in refused] == ["regeneration-failed", "not-ready"]


def test_expiry_purges_unfetched_sheets(svc: Services) -> None:
    person, reg_id = _ready(svc)
    expires = load(svc, reg_id).expires_at
    assert expires == T + timedelta(seconds=svc.settings.sheet_ttl_seconds)
    # Counts cover every organization (PostgreSQL is shared by the session's tests),
    # so this one's state is what is checked.
    with svc.unit_of_work() as uow:
        regeneration.expire_sheets(uow, expires - timedelta(seconds=1))
    assert stored_sheet(svc, reg_id) is not None and load(svc, reg_id).status == "ready"
    with svc.unit_of_work() as uow:
        assert regeneration.expire_sheets(uow, expires) >= 1
    assert stored_sheet(svc, reg_id) is None and load(svc, reg_id).status == "expired"
    with svc.unit_of_work() as uow:
        regeneration.expire_sheets(uow, expires + timedelta(hours=1))
    expired = [e.details for e in events(svc, person.org_id, EventType.SHEET_EXPIRED)]
    assert expired.count({"regeneration_id": reg_id}) == 1  # (the first set's expired too)
    with pytest.raises(SheetExpired):
        retrieve(svc, person, reg_id, "pdf", expires)


def test_a_sheet_past_its_expiry_is_refused_and_purged_on_retrieval(svc: Services) -> None:
    person, reg_id = _ready(svc)
    expires = load(svc, reg_id).expires_at
    assert expires is not None
    with pytest.raises(SheetExpired):
        retrieve(svc, person, reg_id, "text", expires)
    assert stored_sheet(svc, reg_id) is None and load(svc, reg_id).status == "expired"
    assert len(events(svc, person.org_id, EventType.SHEET_EXPIRED)) == 1


# --- PostgreSQL: two simultaneous retrievals ------------------------------------


def _race(
    svc: Services, person: Person, reg_id: str, kinds: tuple[str, str] = ("pdf", "pdf")
) -> list[object]:
    results: list[object] = []
    barrier = threading.Barrier(2)

    def fetch(kind: str) -> None:
        barrier.wait()
        try:
            if kind == "json":
                results.append(retrieve_forms(svc, person, reg_id, kind, T).pdf)
            else:
                results.append(retrieve(svc, person, reg_id, kind, T))
        except DomainError as exc:
            results.append(exc)

    threads = [threading.Thread(target=fetch, args=(kind,)) for kind in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.postgres
def test_of_two_simultaneous_retrievals_exactly_one_gets_the_sheet(pg_services: Services) -> None:
    for _ in range(5):
        person, reg_id = _ready(pg_services)
        results = _race(pg_services, person, reg_id)
        assert len(results) == 2
        assert sum(isinstance(r, bytes) for r in results) == 1
        assert sum(isinstance(r, SheetGone) for r in results) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("kinds", [("json", "json"), ("json", "text")], ids="-".join)
def test_of_two_simultaneous_retrievals_one_in_both_forms_exactly_one_wins(
    pg_services: Services, kinds: tuple[str, str]
) -> None:
    for _ in range(5):
        person, reg_id = _ready(pg_services)
        results = _race(pg_services, person, reg_id, kinds)
        assert len(results) == 2
        assert sum(isinstance(r, bytes) for r in results) == 1
        assert sum(isinstance(r, SheetGone) for r in results) == 1


def test_the_json_retrieval_gives_both_forms_and_audits_its_format(svc: Services) -> None:
    person, reg_id = _ready(svc)
    got = retrieve_forms(svc, person, reg_id, "json", T)
    assert got.pdf.startswith(b"%PDF-")
    assert len(got.codes) == 5
    printed = "".join(p.extract_text() for p in PdfReader(io.BytesIO(got.pdf)).pages)
    assert all(code in printed for code in got.codes)
    assert all(code not in repr(got) for code in got.codes)  # no log shows them
    retrieved = events(svc, person.org_id, EventType.SHEET_RETRIEVED)
    assert retrieved[-1].details == {"regeneration_id": reg_id, "format": "json"}
    with pytest.raises(SheetGone):
        retrieve(svc, person, reg_id, "pdf", T)


@pytest.mark.postgres
def test_a_retrieval_waiting_on_the_winners_claim_gets_sheet_gone(pg_services: Services) -> None:
    """Deterministic interleaving: the loser's claim blocks on the winner's row lock
    and, once the winner commits, finds nothing to claim."""
    svc = pg_services
    person, reg_id = _ready(svc)
    loser: list[object] = []

    def fetch() -> None:
        try:
            loser.append(retrieve(svc, person, reg_id, "pdf", T))
        except DomainError as exc:
            loser.append(exc)

    thread = threading.Thread(target=fetch)
    with svc.unit_of_work() as uow:
        body, _ = regeneration.retrieve_sheet(
            uow, svc, user(uow.session, person.org_id), reg_id, "text", T, CTX
        )
        thread.start()
        deadline = time.monotonic() + 10
        with svc.engine.connect() as probe:
            while not probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one():
                assert time.monotonic() < deadline, "the second claim never waited"
                probe.rollback()
                time.sleep(0.01)
    thread.join(30)
    assert body and len(loser) == 1 and isinstance(loser[0], SheetGone)


def test_sequential_retrievals_on_sqlite_serve_once(services: Services) -> None:
    person, reg_id = _ready(services)
    results: list[bytes | SheetGone] = []
    for kind in ("pdf", "text", "pdf"):
        try:
            results.append(retrieve(services, person, reg_id, kind, T))
        except SheetGone as exc:
            results.append(exc)
    assert isinstance(results[0], bytes)
    assert all(isinstance(r, SheetGone) for r in results[1:])


def test_a_rolled_back_processing_leaves_the_old_set_active(svc: Services) -> None:
    person, first_id = enrolled(svc)
    assert first_id is not None
    process(svc, first_id, NOW)
    reg_id = request(svc, person, T).regeneration.id
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        assert regeneration.process_regeneration(uow, svc, reg_id, T) == "ready"
        raise RuntimeError("worker killed before commit")
    rows = _codes(svc, person)
    assert len(rows) == 5 and all(r.deactivated_at is None for r in rows)
    reg = load(svc, reg_id)
    assert (reg.status, reg.totp_ciphertext is None) == ("queued", False)
    assert stored_sheet(svc, reg_id) is None
    assert process(svc, reg_id, T) == "ready"  # the redelivery does it, once
    assert len([r for r in _codes(svc, person) if r.deactivated_at is None]) == 5
