"""Deleting a user (domain.users.delete_user) on SQLite and PostgreSQL: everything of
theirs goes in one transaction, whatever state their regeneration is in, the worker
copes with a user who vanished under it, and the chain still verifies. And the
upsert's seam to the mail: the old address, and only on a change from one."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from domain import audit, notify, regeneration, tokens, users
from domain.audit.types import EventType
from domain.audit.verify import verify_chain
from domain.errors import NotFound
from domain.models import (
    ApiToken,
    AttemptLimit,
    AuthFailure,
    BackupCode,
    Regeneration,
    Sheet,
    TokenKind,
    TotpEnrollment,
    User,
)
from infra.services import Services
from tests.integration.pipeline_helpers import NOW, enrolled, request, user
from tests.support.builders import ADMIN_CTX, new_org
from tests.support.records import events, process

T = NOW + timedelta(minutes=5)


def remains(svc: Services, org_id: str, external_id: str, user_row_id: str) -> dict[str, int]:
    """How many rows of each kind the user still has."""
    by_user: dict[str, Any] = {
        "enrollment": TotpEnrollment.user_id,
        "codes": BackupCode.user_id,
        "regenerations": Regeneration.user_id,
        "limits": AttemptLimit.user_id,
        "failures": AuthFailure.user_id,
        "users": User.id,
    }
    with svc.unit_of_work() as uow:
        counts = {
            name: uow.session.scalar(
                select(func.count()).select_from(column.class_).where(column == user_row_id)
            )
            or 0
            for name, column in by_user.items()
        }
        counts["sheets"] = (
            uow.session.scalar(
                select(func.count())
                .select_from(Sheet)
                .join(Regeneration, Regeneration.id == Sheet.regeneration_id)
                .where(Regeneration.user_id == user_row_id)
            )
            or 0
        )
        counts["tokens"] = (
            uow.session.scalar(
                select(func.count())
                .select_from(ApiToken)
                .where(ApiToken.org_id == org_id, ApiToken.principal_id == external_id)
            )
            or 0
        )
    return counts


def row_id(svc: Services, org_id: str, external_id: str = "alice") -> str:
    with svc.unit_of_work() as uow:
        return user(uow.session, org_id, external_id).id


def give_everything(svc: Services, org_id: str, external_id: str = "alice") -> None:
    """Tokens and a browser session, attempt limits and recorded failures."""
    rid = row_id(svc, org_id, external_id)
    with svc.unit_of_work() as uow:
        tokens.issue(uow, org_id, external_id, "user", audit.CLI)
        tokens.issue(uow, org_id, external_id, "user", audit.CLI, kind=TokenKind.SESSION)
        uow.session.add(AttemptLimit(user_id=rid, factor="totp", consecutive_failures=2))
        uow.session.add(AuthFailure(user_id=rid, kind="totp", occurred_at=NOW))


def delete(svc: Services, org_id: str, external_id: str = "alice") -> None:
    with svc.unit_of_work() as uow:
        users.delete_user(uow, org_id, external_id, ADMIN_CTX)


def chain_ok(svc: Services, org_id: str) -> bool:
    with svc.unit_of_work() as uow:
        return verify_chain(uow.session, org_id, svc.settings).ok


NOTHING = {
    "enrollment": 0,
    "codes": 0,
    "regenerations": 0,
    "limits": 0,
    "failures": 0,
    "users": 0,
    "sheets": 0,
    "tokens": 0,
}


def test_delete_removes_every_row_of_the_user_and_the_chain_verifies(svc: Services) -> None:
    person, _ = enrolled(svc)
    give_everything(svc, person.org_id)
    # A service token whose principal is also called alice is not the user's: it stays.
    with svc.unit_of_work() as uow:
        tokens.issue(uow, person.org_id, "alice", "service", audit.CLI)
    rid = row_id(svc, person.org_id)
    before = remains(svc, person.org_id, "alice", rid)
    assert min(before.values()) >= 1, before
    history = [e.type for e in events(svc, person.org_id) if e.user_id == "alice"]
    delete(svc, person.org_id)
    assert remains(svc, person.org_id, "alice", rid) == {**NOTHING, "tokens": 1}
    after = [e.type for e in events(svc, person.org_id) if e.user_id == "alice"]
    assert after == [*history, EventType.USER_DELETED]  # the history stays
    deleted = events(svc, person.org_id, EventType.USER_DELETED)[0]
    assert deleted.details == {
        "regenerations_removed": 1,
        "codes_removed": 5,
        "was_enrolled": True,
        "tokens_removed": 2,
        "sheets_removed": 1,  # the first set's sheet was never fetched
    }
    assert (deleted.actor_principal_id, deleted.request_id) == ("root", "req-adm")
    assert chain_ok(svc, person.org_id)


def test_a_delete_that_rolls_back_removes_nothing(svc: Services) -> None:
    person, _ = enrolled(svc)
    give_everything(svc, person.org_id)
    rid = row_id(svc, person.org_id)
    before = remains(svc, person.org_id, "alice", rid)
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        users.delete_user(uow, person.org_id, "alice", ADMIN_CTX)
        raise RuntimeError("the process died before the commit")
    assert remains(svc, person.org_id, "alice", rid) == before
    assert events(svc, person.org_id, EventType.USER_DELETED) == []


def test_deleting_with_a_queued_regeneration_leaves_the_worker_nothing(svc: Services) -> None:
    person, first = enrolled(svc, settle=False)
    assert first is not None
    rid = row_id(svc, person.org_id)
    delete(svc, person.org_id)
    with svc.unit_of_work() as uow:
        assert regeneration.mark_started(uow, first, T) is False
    assert process(svc, first, T) == regeneration.MISSING
    with svc.unit_of_work() as uow:
        assert regeneration.abandon(uow, first, T) is False
    assert remains(svc, person.org_id, "alice", rid) == NOTHING
    assert chain_ok(svc, person.org_id)


def test_deleting_while_processing_leaves_the_worker_nothing(svc: Services) -> None:
    person, first = enrolled(svc)
    reg_id = request(svc, person, T).regeneration.id
    with svc.unit_of_work() as uow:
        assert regeneration.mark_started(uow, reg_id, T) is True  # now processing
    rid = row_id(svc, person.org_id)
    delete(svc, person.org_id)
    assert process(svc, reg_id, T) == regeneration.MISSING
    assert remains(svc, person.org_id, "alice", rid) == NOTHING
    assert first is not None and chain_ok(svc, person.org_id)


def test_deleting_with_a_ready_unfetched_sheet_deletes_the_sheet(svc: Services) -> None:
    person, _ = enrolled(svc)
    reg_id = request(svc, person, T).regeneration.id
    assert process(svc, reg_id, T) == "ready"
    rid = row_id(svc, person.org_id)
    delete(svc, person.org_id)
    with svc.unit_of_work() as uow:
        assert uow.session.get(Sheet, reg_id) is None
    assert remains(svc, person.org_id, "alice", rid) == NOTHING
    assert process(svc, reg_id, T) == regeneration.MISSING  # a redelivery
    assert chain_ok(svc, person.org_id)


def test_deleting_an_unknown_user_is_not_found_and_appends_nothing(svc: Services) -> None:
    org_id = new_org(svc)
    other = new_org(svc)
    with svc.unit_of_work() as uow:
        users.upsert(uow, other, "bob", {}, ADMIN_CTX)
    before = len(events(svc, org_id))
    for name in ("nobody", "bob"):  # bob is of another organization
        with pytest.raises(NotFound), svc.unit_of_work() as uow:
            users.delete_user(uow, org_id, name, ADMIN_CTX)
    assert len(events(svc, org_id)) == before


# --- races on PostgreSQL (SQLite's single writer serialises them) --------------------


def _await_lock_wait(svc: Services) -> None:
    deadline = time.monotonic() + 10
    with svc.engine.connect() as probe:
        while not probe.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one():
            assert time.monotonic() < deadline, "nothing ever waited for the lock"
            probe.rollback()
            time.sleep(0.01)


@pytest.mark.postgres
def test_a_worker_waiting_for_the_deleted_users_lock_finds_nothing(
    pg_services: Services,
) -> None:
    svc = pg_services
    person, _ = enrolled(svc)
    reg_id = request(svc, person, T).regeneration.id
    rid = row_id(svc, person.org_id)
    outcome: list[object] = []

    def work() -> None:
        try:
            outcome.append(process(svc, reg_id, T))
        except Exception as exc:  # the assertion below names it
            outcome.append(exc)

    worker = threading.Thread(target=work)
    with svc.unit_of_work() as uow:
        users.delete_user(uow, person.org_id, "alice", ADMIN_CTX)
        worker.start()
        _await_lock_wait(svc)  # the worker waits on the user's row lock
    worker.join(30)
    assert outcome == [regeneration.MISSING]
    assert remains(svc, person.org_id, "alice", rid) == NOTHING
    assert chain_ok(svc, person.org_id)


@pytest.mark.postgres
def test_a_delete_waiting_for_the_worker_removes_the_sheet_it_made(
    pg_services: Services,
) -> None:
    svc = pg_services
    person, _ = enrolled(svc)
    reg_id = request(svc, person, T).regeneration.id
    rid = row_id(svc, person.org_id)
    failed: list[BaseException] = []

    def remove() -> None:
        try:
            delete(svc, person.org_id)
        except BaseException as exc:  # the assertion below names it
            failed.append(exc)

    deleter = threading.Thread(target=remove)
    with svc.unit_of_work() as uow:
        assert regeneration.process_regeneration(uow, svc, reg_id, T) == "ready"
        deleter.start()
        _await_lock_wait(svc)  # the delete waits for the worker's commit
    deleter.join(30)
    assert failed == []
    assert remains(svc, person.org_id, "alice", rid) == NOTHING
    assert chain_ok(svc, person.org_id)


# --- the seam to the mail ------------------------------------------------------------


def test_a_changed_address_is_told_to_the_old_one_only(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    told: list[tuple[str, str, str]] = []

    def record(uow: Any, event: Any, field: str, old_address: str) -> None:
        told.append((event.type, field, old_address))

    monkeypatch.setattr(notify, "address_changed", record)
    org_id = new_org(svc)

    def put(**given: str | None) -> None:
        with svc.unit_of_work() as uow:
            users.upsert(uow, org_id, "ada", given, ADMIN_CTX)

    put(email="ada@example.org")  # from nothing: nobody to tell
    put(email="ada@example.org", recovery_email="r@example.org")  # recovery from nothing
    assert told == []
    put(email="new@example.org")
    put(recovery_email=None)
    put(display_name="Ada")  # not an address
    assert told == [
        (EventType.USER_UPSERTED, "email", "ada@example.org"),
        (EventType.USER_UPSERTED, "recovery_email", "r@example.org"),
    ]
