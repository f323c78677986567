"""TOTP enrollment against SQLite and PostgreSQL: start, confirm, the first set."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from sqlalchemy import func, select

from api import representations
from domain import enrollment, outbox
from domain.audit.types import EventType, Outcome
from domain.errors import (
    AlreadyEnrolled,
    InvalidRequest,
    InvalidTotp,
    NoPendingEnrollment,
    TooManyAttempts,
)
from domain.models import AuthFailure, OutboxMessage, Regeneration, TotpEnrollment
from infra.services import Services
from tests.integration.pipeline_helpers import (
    NOW,
    enrolled,
    request,
    start,
    stored_sheet,
    user,
    wrong_code,
)
from tests.support.builders import USER_CTX as CTX
from tests.support.builders import Person, new_org, new_user
from tests.support.records import events, process
from tests.support.records import load_regeneration as load


def _confirm(
    svc: Services, person: Person, code: object, at: datetime = NOW
) -> Regeneration | None:
    """`code` is any object: the use case must refuse what is not 6 digits."""
    with svc.unit_of_work() as uow:
        return enrollment.confirm_enrollment(
            uow,
            svc,
            user(uow.session, person.org_id),
            code,  # type: ignore[arg-type]
            at,
            CTX,
        )


def _failures(svc: Services, org_id: str) -> int:
    with svc.unit_of_work() as uow:
        return int(
            uow.session.execute(
                select(func.count())
                .select_from(AuthFailure)
                .where(AuthFailure.user_id == user(uow.session, org_id).id)
            ).scalar_one()
        )


def _pending(svc: Services) -> Person:
    org_id = new_org(svc)
    new_user(svc, org_id)
    return Person(org_id, "alice", start(svc, org_id))


def test_start_returns_a_secret_and_an_otpauth_uri_for_the_account(svc: Services) -> None:
    org_id = new_org(svc)
    new_user(svc, org_id, email="alice@example.org")
    with svc.unit_of_work() as uow:
        secret, uri = enrollment.start_enrollment(uow, svc, user(uow.session, org_id), CTX)
        stored = uow.session.get(TotpEnrollment, user(uow.session, org_id).id)
        assert stored is not None and stored.confirmed_at is None
        assert secret.encode() not in stored.secret_ciphertext
        assert svc.box.decrypt_text(stored.secret_ciphertext) == secret
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == f"/{svc.settings.totp_issuer}:alice@example.org"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret] and query["issuer"] == [svc.settings.totp_issuer]
    started = events(svc, org_id, EventType.ENROLLMENT_STARTED)
    assert len(started) == 1 and started[0].user_id == "alice"
    assert secret not in json.dumps(started[0].details)


def test_the_account_falls_back_to_the_user_id_without_an_email(svc: Services) -> None:
    org_id = new_org(svc)
    new_user(svc, org_id)
    with svc.unit_of_work() as uow:
        _, uri = enrollment.start_enrollment(uow, svc, user(uow.session, org_id), CTX)
    assert unquote(urlsplit(uri).path).endswith(":alice")


def test_restarting_replaces_the_secret(svc: Services) -> None:
    person = _pending(svc)
    newer = start(svc, person.org_id)
    assert newer != person.secret
    with pytest.raises(InvalidTotp):
        _confirm(svc, person, person.code(NOW))
    assert _confirm(svc, Person(person.org_id, "alice", newer), code_now(newer)) is not None


def code_now(secret: str) -> str:
    return Person("", "", secret).code(NOW)


def test_confirming_with_a_valid_code_enrolls_and_queues_the_first_set(svc: Services) -> None:
    person, reg_id = enrolled(svc, code_count=7, settle=False)
    assert reg_id is not None
    reg = load(svc, reg_id)
    assert (reg.reason, reg.status, reg.code_count) == ("enrollment", "queued", 7)
    assert reg.totp_ciphertext is None and reg.accepted_at == NOW
    with svc.unit_of_work() as uow:
        stored = uow.session.get(TotpEnrollment, user(uow.session, person.org_id).id)
        assert stored is not None and stored.confirmed_at == NOW
        message = uow.session.execute(
            select(OutboxMessage).where(OutboxMessage.args["regeneration_id"].as_string() == reg_id)
        ).scalar_one()
        assert message.task == outbox.TASK_PROCESS_REGENERATION
    kinds = [e.type for e in events(svc, person.org_id)]
    assert kinds[-2:] == [EventType.ENROLLMENT_CONFIRMED, EventType.REGENERATION_REQUESTED]

    assert process(svc, reg_id, NOW + timedelta(seconds=2)) == "ready"
    sheet = stored_sheet(svc, reg_id)
    assert sheet is not None and len(sheet[1].splitlines()) == 7


def test_confirming_when_backup_codes_are_off_enrolls_without_a_set(svc: Services) -> None:
    person, reg_id = enrolled(svc, enabled=False)
    assert reg_id is None
    assert EventType.REGENERATION_REQUESTED not in [e.type for e in events(svc, person.org_id)]
    assert EventType.ENROLLMENT_CONFIRMED in [e.type for e in events(svc, person.org_id)]


def test_a_wrong_code_is_refused_counted_and_audited(svc: Services) -> None:
    person = _pending(svc)
    wrong = wrong_code(person, NOW)
    with pytest.raises(InvalidTotp):
        _confirm(svc, person, wrong)
    assert _failures(svc, person.org_id) == 1
    failed = events(svc, person.org_id, EventType.ENROLLMENT_FAILED)
    assert [(e.outcome, e.details) for e in failed] == [
        (Outcome.FAILURE, {"reason": "invalid-totp"})
    ]
    with svc.unit_of_work() as uow:
        stored = uow.session.get(TotpEnrollment, user(uow.session, person.org_id).id)
        assert stored is not None and stored.confirmed_at is None


def test_five_wrong_codes_lock_even_the_right_one_out(svc: Services) -> None:
    person = _pending(svc)
    wrong = wrong_code(person, NOW)
    for i in range(5):
        with pytest.raises(InvalidTotp):
            _confirm(svc, person, wrong, NOW + timedelta(seconds=i))
    with pytest.raises(TooManyAttempts) as info:
        _confirm(svc, person, person.code(NOW), NOW + timedelta(seconds=6))
    assert 0 < info.value.retry_after <= svc.settings.lockout_window_seconds
    refusals = events(svc, person.org_id, EventType.ENROLLMENT_FAILED)
    assert refusals[-1].details == {"reason": "too-many-attempts"}


@pytest.mark.parametrize("bad", ["12345", "1234567", "12345a", "١٢٣٤٥٦", 123456, None])
def test_a_malformed_code_is_an_invalid_request(svc: Services, bad: object) -> None:
    person = _pending(svc)
    with pytest.raises(InvalidRequest) as info:
        _confirm(svc, person, bad)
    assert info.value.field == "totp"
    assert _failures(svc, person.org_id) == 0


def test_confirming_without_a_pending_enrollment_is_refused(svc: Services) -> None:
    org_id = new_org(svc)
    new_user(svc, org_id)
    with pytest.raises(NoPendingEnrollment):
        _confirm(svc, Person(org_id, "alice", "A" * 32), "123456")
    person, _ = enrolled(svc)
    with pytest.raises(NoPendingEnrollment):
        _confirm(svc, person, person.code(NOW + timedelta(minutes=1)), NOW + timedelta(minutes=1))
    assert [e.details for e in events(svc, person.org_id, EventType.ENROLLMENT_FAILED)] == [
        {"reason": "no-pending-enrollment"}
    ]


def test_starting_again_once_enrolled_is_refused_and_audited(svc: Services) -> None:
    person, _ = enrolled(svc)
    with pytest.raises(AlreadyEnrolled):
        start(svc, person.org_id)
    assert [e.details for e in events(svc, person.org_id, EventType.ENROLLMENT_FAILED)] == [
        {"reason": "already-enrolled"}
    ]


def test_the_step_that_confirmed_enrollment_cannot_request_a_regeneration(svc: Services) -> None:
    person, _ = enrolled(svc)
    outcome = request(svc, person, NOW)
    assert process(svc, outcome.regeneration.id, NOW + timedelta(seconds=1)) == "failed"
    assert load(svc, outcome.regeneration.id).failure == "totp-replayed"
    later = NOW + timedelta(seconds=60)
    fresh = request(svc, person, later)
    assert process(svc, fresh.regeneration.id, later) == "ready"
    assert representations.regeneration(load(svc, fresh.regeneration.id))["status"] == "ready"
