"""The purge (issue 10, 7(f)): published outbox rows, finished regenerations and old
failure counters go after their retention, in bounded batches; everything newer,
everything still needed and the whole audit trail stay. SQLite and PostgreSQL.

On PostgreSQL each test has a database of its own: the purge works on every row of
a database, and a bounded run over the session's shared one could stop before it
reached this test's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from domain import purge
from domain.audit.verify import verify_chain
from domain.models import AuditEvent, AuthFailure, OutboxMessage, Regeneration, Sheet
from infra.services import Services
from tests.integration.pipeline_helpers import (
    NOW,
    enrolled,
    enrolled_and_fetched,
    request,
    retrieve,
    user,
    wrong_code,
)
from tests.support.builders import Person
from tests.support.postgres import fresh_postgres_database
from tests.support.records import load_regeneration as load
from tests.support.records import process
from tests.support.settings import make_settings

DAY = timedelta(days=1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    """The integration tests' `svc`, but a PostgreSQL database of this test's own."""
    if request.param == "sqlite":
        yield request.getfixturevalue("services")
        return
    with fresh_postgres_database("mfa_purge") as url:
        built = Services.build(make_settings(tmp_path, MFA_DATABASE_URL=url))
        try:
            yield built
        finally:
            built.close()


def _exists(svc: Services, model: type[object], key: object) -> bool:
    with svc.unit_of_work() as uow:
        return uow.session.get(model, key) is not None


def _audit_rows(svc: Services, org_id: str) -> list[tuple[int, str]]:
    with svc.unit_of_work() as uow:
        return [
            (e.seq, e.hash)
            for e in uow.session.execute(
                select(AuditEvent).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
            ).scalars()
        ]


def _chain_verifies(svc: Services, org_id: str) -> bool:
    with svc.unit_of_work() as uow:
        return verify_chain(uow.session, org_id, svc.settings).ok


def _ready(svc: Services, person: Person, at: datetime, key: str | None = None) -> str:
    reg_id = request(svc, person, at, key=key).regeneration.id
    assert process(svc, reg_id, at) == "ready"
    return reg_id


# --- the outbox -------------------------------------------------------------------------


def test_published_outbox_rows_older_than_the_retention_go_in_batches(svc: Services) -> None:
    now = NOW + 400 * DAY
    keep = svc.settings.outbox_retention_seconds
    with svc.unit_of_work() as uow:
        old = [
            OutboxMessage(task="t", args={}, created_at=now - 3 * DAY, published_at=now - 2 * DAY)
            for _ in range(5)
        ]
        recent = OutboxMessage(
            task="t", args={}, created_at=now, published_at=now - timedelta(seconds=keep - 60)
        )
        unpublished = OutboxMessage(task="t", args={}, created_at=now - 30 * DAY)
        uow.session.add_all([*old, recent, unpublished])
        uow.session.flush()
        old_ids = [m.id for m in old]
        recent_id, pending_id = recent.id, unpublished.id

    counts = purge.purge(svc, now, batch=2)
    assert counts["outbox"] >= 5 and counts["batches"] >= 3  # 2 + 2 + 1 at least
    assert not any(_exists(svc, OutboxMessage, i) for i in old_ids)
    assert _exists(svc, OutboxMessage, recent_id)
    assert _exists(svc, OutboxMessage, pending_id)  # still to be published: never purged
    assert purge.purge(svc, now, batch=2)["outbox"] == 0  # idempotent


def test_a_batch_bound_stops_a_run_and_the_next_run_goes_on(services: Services) -> None:
    now = NOW + 400 * DAY
    with services.unit_of_work() as uow:
        uow.session.add_all(
            OutboxMessage(task="t", args={}, created_at=now - 3 * DAY, published_at=now - 2 * DAY)
            for _ in range(7)
        )
    first = purge.purge(services, now, batch=2, max_batches=2)
    assert first["outbox"] == 4  # two batches of two: the run's bound for each kind
    second = purge.purge(services, now, batch=2, max_batches=10)
    assert second["outbox"] == 3
    assert purge.purge(services, now, batch=2)["outbox"] == 0  # idempotent


# --- regenerations ----------------------------------------------------------------------


def test_finished_regenerations_older_than_the_retention_go_the_rest_stay(
    svc: Services,
) -> None:
    person = enrolled_and_fetched(svc)
    t0 = NOW + timedelta(minutes=2)
    fetched = _ready(svc, person, t0, key="first")
    retrieve(svc, person, fetched, "text", t0)
    t1 = t0 + timedelta(minutes=1)
    failed = request(svc, person, t1, code=wrong_code(person, t1)).regeneration.id
    assert process(svc, failed, t1) == "failed"
    newest = _ready(svc, person, t0 + timedelta(minutes=3))
    queued = request(svc, person, t0 + timedelta(minutes=4)).regeneration.id  # never processed
    retention = timedelta(seconds=svc.settings.regeneration_retention_seconds)
    audit_before = _audit_rows(svc, person.org_id)

    just_inside = t0 + retention  # created exactly at the edge: kept
    purge.purge(svc, just_inside)
    assert all(_exists(svc, Regeneration, r) for r in (fetched, failed, newest))

    later = t0 + timedelta(minutes=5) + retention
    counts = purge.purge(svc, later)
    assert counts["regenerations"] >= 2
    assert not _exists(svc, Regeneration, fetched)
    assert not _exists(svc, Regeneration, failed)
    # The newest set's regeneration is what GET /v1/me/mfa reads: kept, sheet and all
    # until the sheet's own expiry; a request never finished is never purged.
    assert _exists(svc, Regeneration, newest) and _exists(svc, Sheet, newest)
    assert load(svc, queued).status == "queued"
    assert _audit_rows(svc, person.org_id) == audit_before
    assert _chain_verifies(svc, person.org_id)


def test_a_purged_regenerations_idempotency_key_starts_a_new_request(svc: Services) -> None:
    person = enrolled_and_fetched(svc)
    t0 = NOW + timedelta(minutes=2)
    first = _ready(svc, person, t0, key="same-key")
    retrieve(svc, person, first, "pdf", t0)
    _ready(svc, person, t0 + timedelta(minutes=1))  # a newer set: `first` is not the newest
    later = t0 + timedelta(seconds=svc.settings.regeneration_retention_seconds) + DAY
    purge.purge(svc, later)
    assert not _exists(svc, Regeneration, first)
    totp = person.code(later)
    outcome = request(svc, person, later, code=totp, key="same-key")
    assert outcome.created and outcome.regeneration.id != first
    # Within the 24 h window the key answers the same request, purge or not.
    purge.purge(svc, later + timedelta(hours=23))
    again = request(svc, person, later + timedelta(hours=23), code=totp, key="same-key")
    assert (again.created, again.regeneration.id) == (False, outcome.regeneration.id)


def test_the_retention_of_regenerations_outlasts_the_idempotency_window(svc: Services) -> None:
    assert svc.settings.regeneration_retention_seconds > 86400


# --- failure counters -------------------------------------------------------------------


def test_failure_rows_older_than_the_longest_window_that_reads_them_go(svc: Services) -> None:
    person, _ = enrolled(svc)
    now = NOW + 400 * DAY
    cutoff = purge.auth_failure_cutoff(svc.settings, now)
    assert now - cutoff >= timedelta(seconds=svc.settings.lockout_window_seconds)
    with svc.unit_of_work() as uow:
        user_id = user(uow.session, person.org_id).id
        second = timedelta(seconds=1)
        uow.session.add_all(
            AuthFailure(user_id=user_id, kind="code", occurred_at=cutoff + offset)
            for offset in (-second, -10 * DAY, second)
        )
    audit_before = _audit_rows(svc, person.org_id)
    assert purge.purge(svc, now)["auth_failures"] >= 2
    with svc.unit_of_work() as uow:
        left = uow.session.execute(
            select(AuthFailure.occurred_at).where(AuthFailure.user_id == user_id)
        ).scalars()
        assert list(left) == [cutoff + timedelta(seconds=1)]
    assert _audit_rows(svc, person.org_id) == audit_before


def test_purge_older_than_deletes_by_age_alone(svc: Services) -> None:
    person, _ = enrolled(svc)
    now = NOW + 500 * DAY
    with svc.unit_of_work() as uow:
        user_id = user(uow.session, person.org_id).id
        uow.session.add_all(
            AuthFailure(user_id=user_id, kind="totp", occurred_at=now - timedelta(hours=h))
            for h in (1, 3, 5)
        )
    with svc.unit_of_work() as uow:
        assert purge.purge_auth_failures(uow.session, now - timedelta(hours=2), batch=10) >= 2
        remaining = uow.session.execute(
            select(func.count()).where(AuthFailure.user_id == user_id)
        ).scalar_one()
    assert remaining == 1


def test_the_purge_never_touches_the_audit_trail(svc: Services) -> None:
    person, _ = enrolled(svc)
    before = _audit_rows(svc, person.org_id)
    assert before
    purge.purge(svc, NOW + 10_000 * DAY)
    assert _audit_rows(svc, person.org_id) == before
    assert _chain_verifies(svc, person.org_id)
