"""Lockout primitives, counted in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from domain import accounts, audit, policy
from domain import audit_types as types
from domain.errors import TooManyAttempts
from domain.models import AuditEvent
from domain.services import Services
from tests.conftest import unique

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _user(services: Services) -> tuple[str, str]:
    org_id = unique()
    with services.unit_of_work() as session:
        accounts.create_org(session, org_id, audit.CLI)
        user = accounts.create_user(session, org_id, "alice", None, audit.CLI)
        return org_id, user.id


def _fail(services: Services, org_id: str, at: datetime) -> bool:
    with services.unit_of_work() as session:
        user = accounts.lock_user(session, accounts.get_user(session, org_id, "alice"))
        return policy.record_failure(session, user, "totp", at, audit.SYSTEM, services.lockout)


def test_fifth_failure_within_the_window_locks_and_is_audited(services: Services) -> None:
    org_id, _ = _user(services)
    started = [_fail(services, org_id, NOW + timedelta(minutes=i)) for i in range(5)]
    assert started == [False, False, False, False, True]
    with services.unit_of_work() as session:
        user = accounts.get_user(session, org_id, "alice")
        wait = policy.retry_after(user, NOW + timedelta(minutes=5))
        assert wait == 15 * 60 - 60
        with pytest.raises(TooManyAttempts) as info:
            policy.ensure_not_locked(session, user, NOW + timedelta(minutes=5), audit.SYSTEM)
        assert info.value.retry_after == wait
        kinds = session.execute(
            select(AuditEvent.type).where(AuditEvent.org_id == org_id)
        ).scalars()
        assert types.LOCKOUT_STARTED in list(kinds)


def test_failures_spread_beyond_the_window_do_not_lock(services: Services) -> None:
    org_id, _ = _user(services)
    results = [_fail(services, org_id, NOW + timedelta(minutes=4 * i)) for i in range(6)]
    assert not any(results)


def test_lock_ends_when_the_window_passes_and_the_end_is_audited(services: Services) -> None:
    org_id, _ = _user(services)
    for i in range(5):
        _fail(services, org_id, NOW + timedelta(seconds=i))
    later = NOW + timedelta(minutes=16)
    with services.unit_of_work() as session:
        user = accounts.lock_user(session, accounts.get_user(session, org_id, "alice"))
        policy.ensure_not_locked(session, user, later, audit.SYSTEM)
        assert user.locked_until is None
    with services.unit_of_work() as session:
        kinds = list(
            session.execute(select(AuditEvent.type).where(AuditEvent.org_id == org_id)).scalars()
        )
    assert kinds[-1] == types.LOCKOUT_ENDED
    # the slate is clean: four more failures do not lock again
    assert not any(_fail(services, org_id, later + timedelta(seconds=i)) for i in range(4))


def test_success_resets_the_count(services: Services) -> None:
    org_id, _ = _user(services)
    for i in range(4):
        _fail(services, org_id, NOW + timedelta(seconds=i))
    with services.unit_of_work() as session:
        policy.reset_failures(session, accounts.get_user(session, org_id, "alice"))
    assert not _fail(services, org_id, NOW + timedelta(seconds=10))


@pytest.mark.postgres
def test_count_holds_across_two_processes_engines(pg_services: Services, pg_settings) -> None:  # type: ignore[no-untyped-def]
    other = Services.build(pg_settings)
    try:
        org_id, _ = _user(pg_services)
        results = [
            _fail(pg_services if i % 2 else other, org_id, NOW + timedelta(seconds=i))
            for i in range(5)
        ]
        assert results[-1] is True
    finally:
        other.close()
