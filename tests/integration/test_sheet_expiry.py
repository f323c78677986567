"""A sheet nobody fetched (issue 10, 7(a)): when it expires its set is deactivated
and GET /v1/me/mfa says so; an admin's revocation deletes it. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from api import representations
from domain import admin, audit, regeneration
from domain.audit.types import EventType, Outcome
from domain.errors import SheetExpired
from domain.models import BackupCode, Sheet
from infra.services import Services
from tests.integration.pipeline_helpers import (
    NOW,
    enrolled_and_fetched,
    request,
    retrieve,
    stored_sheet,
    user,
)
from tests.support.builders import Person
from tests.support.records import events, process
from tests.support.records import load_regeneration as load

T = NOW + timedelta(minutes=2)
ADMIN = audit.Context(principal_id="root", role="admin", token_id="tok-adm", request_id="req-adm")


def _ready(svc: Services, at: datetime = T) -> tuple[Person, str]:
    person = enrolled_and_fetched(svc)
    reg_id = request(svc, person, at).regeneration.id
    assert process(svc, reg_id, at) == "ready"
    return person, reg_id


def _status(svc: Services, person: Person) -> dict[str, Any]:
    with svc.unit_of_work() as uow:
        shown = admin.mfa_status(
            uow.session, svc, user(uow.session, person.org_id, person.external_id)
        )
    return representations.mfa_status(shown)


def _set_rows(svc: Services, set_id: str | None) -> list[BackupCode]:
    with svc.unit_of_work() as uow:
        query = select(BackupCode).where(BackupCode.set_id == set_id)
        return list(uow.session.execute(query).scalars())


def _expiry_deactivations(svc: Services, person: Person) -> list[Any]:
    """The deactivation events an expiry wrote (a regeneration writes its own)."""
    found = events(svc, person.org_id, EventType.CODES_DEACTIVATED)
    return [e for e in found if e.details.get("reason") == "sheet-expired"]


def _expire(svc: Services, at: datetime) -> None:
    with svc.unit_of_work() as uow:
        regeneration.expire_sheets(uow, at)


def test_an_unfetched_sheet_that_expires_deactivates_its_set_and_the_status_says_so(
    svc: Services,
) -> None:
    person, reg_id = _ready(svc)
    reg = load(svc, reg_id)
    assert reg.expires_at is not None
    assert _status(svc, person)["last_set_expired_unseen"] is False
    _expire(svc, reg.expires_at)
    rows = _set_rows(svc, reg.set_id)
    assert len(rows) == 5 and all(r.deactivated_at == reg.expires_at for r in rows)
    body = _status(svc, person)
    assert (body["backup_codes"], body["last_set_expired_unseen"]) == (None, True)
    [deactivated] = _expiry_deactivations(svc, person)
    assert (deactivated.outcome, deactivated.actor_role) == (Outcome.SUCCESS, "system")
    assert deactivated.details == {
        "regeneration_id": reg_id,
        "count": 5,
        "reason": "sheet-expired",
    }
    # The expiry and the deactivation are one step, written together, once.
    _expire(svc, reg.expires_at + timedelta(hours=1))
    assert len(_expiry_deactivations(svc, person)) == 1
    assert len(events(svc, person.org_id, EventType.SHEET_EXPIRED)) == 1


def test_a_retrieval_that_finds_the_sheet_expired_deactivates_the_set_too(svc: Services) -> None:
    person, reg_id = _ready(svc)
    reg = load(svc, reg_id)
    assert reg.expires_at is not None
    with pytest.raises(SheetExpired):
        retrieve(svc, person, reg_id, "text", reg.expires_at)
    assert all(r.deactivated_at is not None for r in _set_rows(svc, reg.set_id))
    assert _status(svc, person)["last_set_expired_unseen"] is True


def test_a_set_whose_sheet_was_fetched_stays_active_after_the_ttl(svc: Services) -> None:
    person, reg_id = _ready(svc)
    retrieve(svc, person, reg_id, "pdf", T)
    reg = load(svc, reg_id)
    assert reg.expires_at is not None
    _expire(svc, reg.expires_at + timedelta(hours=1))
    assert load(svc, reg_id).status == "retrieved"
    assert all(r.deactivated_at is None for r in _set_rows(svc, reg.set_id))
    body = _status(svc, person)
    assert body["backup_codes"]["remaining"] == 5
    assert body["last_set_expired_unseen"] is False
    assert _expiry_deactivations(svc, person) == []


def test_a_later_regeneration_clears_last_set_expired_unseen(svc: Services) -> None:
    person, reg_id = _ready(svc)
    expires = load(svc, reg_id).expires_at
    assert expires is not None
    _expire(svc, expires)
    assert _status(svc, person)["last_set_expired_unseen"] is True
    later = expires + timedelta(minutes=1)
    again = request(svc, person, later).regeneration.id
    assert process(svc, again, later) == "ready"
    body = _status(svc, person)
    assert body["last_set_expired_unseen"] is False
    assert body["backup_codes"]["set_id"] == load(svc, again).set_id


def test_revocation_deletes_an_unfetched_sheet_and_ends_its_regeneration_expired(
    svc: Services,
) -> None:
    person, reg_id = _ready(svc)
    with svc.unit_of_work() as uow:
        admin.revoke_codes(uow, person.org_id, person.external_id, ADMIN)
    assert stored_sheet(svc, reg_id) is None
    with svc.unit_of_work() as uow:
        assert uow.session.get(Sheet, reg_id) is None
    assert load(svc, reg_id).status == "expired"
    with pytest.raises(SheetExpired):
        retrieve(svc, person, reg_id, "text", T)
    [expired] = events(svc, person.org_id, EventType.SHEET_EXPIRED)
    assert (expired.details, expired.actor_principal_id) == ({"regeneration_id": reg_id}, "root")
    [revoked] = events(svc, person.org_id, EventType.CODES_REVOKED)
    assert revoked.details == {"count": 5}
    assert revoked.seq < expired.seq
    # The codes were revoked, not deactivated by the expiry: one event says so, not two.
    assert _expiry_deactivations(svc, person) == []
    # Nobody saw that set: the user is told to regenerate.
    body = _status(svc, person)
    assert (body["backup_codes"], body["last_set_expired_unseen"]) == (None, True)


def test_revocation_leaves_a_fetched_sheets_regeneration_retrieved(svc: Services) -> None:
    person, reg_id = _ready(svc)
    retrieve(svc, person, reg_id, "text", T)
    with svc.unit_of_work() as uow:
        admin.revoke_codes(uow, person.org_id, person.external_id, ADMIN)
    assert load(svc, reg_id).status == "retrieved"
    assert events(svc, person.org_id, EventType.SHEET_EXPIRED) == []
    assert _status(svc, person)["last_set_expired_unseen"] is False
