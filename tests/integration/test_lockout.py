"""Attempt-limit primitives (domain.limits), counted in the database."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from domain import accounts, audit, limits, sources
from domain.audit.types import EventType
from domain.errors import InvalidRequest, TooManyAttempts, TotpLocked
from domain.models import AuditEvent
from infra.services import Services
from tests.support.builders import NOW, new_org, new_user


def _user(services: Services) -> tuple[str, str]:
    org_id = new_org(services)
    return org_id, new_user(services, org_id)


def _fail(services: Services, org_id: str, at: datetime) -> None:
    with services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, org_id, "alice"))
        limits.record_failure(uow, user, limits.TOTP, None, at, audit.SYSTEM, services.limits)


def _check(services: Services, org_id: str, at: datetime) -> None:
    with services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, org_id, "alice"))
        limits.end_expired(uow, user, limits.TOTP, at, audit.SYSTEM, services.limits)
        limits.check_totp(uow.session, user, at, services.limits)


def _throttled_until(services: Services, org_id: str, at: datetime) -> datetime | None:
    with services.unit_of_work() as uow:
        user = accounts.get_user(uow.session, org_id, "alice")
        return limits.status(uow.session, user, at, services.limits).totp_throttled_until


def _types(services: Services, org_id: str) -> list[str]:
    with services.unit_of_work() as uow:
        query = select(AuditEvent.type).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
        return list(uow.session.execute(query).scalars())


def test_fifth_totp_failure_within_the_window_throttles_and_is_audited(services: Services) -> None:
    org_id, _ = _user(services)
    for i in range(4):
        _fail(services, org_id, NOW + timedelta(minutes=i))
        _check(services, org_id, NOW + timedelta(minutes=i, seconds=1))
    _fail(services, org_id, NOW + timedelta(minutes=4))
    with pytest.raises(TooManyAttempts) as info:
        _check(services, org_id, NOW + timedelta(minutes=5))
    assert info.value.retry_after == 10 * 60  # the rest of the window begun at NOW
    assert _types(services, org_id).count(EventType.LOCKOUT_STARTED) == 1


def test_failures_spread_beyond_the_window_do_not_throttle(services: Services) -> None:
    org_id, _ = _user(services)
    for i in range(6):
        _fail(services, org_id, NOW + timedelta(minutes=4 * i))
        _check(services, org_id, NOW + timedelta(minutes=4 * i, seconds=1))
    assert _throttled_until(services, org_id, NOW + timedelta(minutes=20, seconds=1)) is None
    assert EventType.LOCKOUT_STARTED not in _types(services, org_id)


def test_a_throttle_ends_when_the_window_passes_and_the_end_is_audited(services: Services) -> None:
    org_id, _ = _user(services)
    for i in range(5):
        _fail(services, org_id, NOW + timedelta(seconds=i))
    later = NOW + timedelta(minutes=16)
    _check(services, org_id, later)
    assert _types(services, org_id)[-1] == EventType.LOCKOUT_ENDED
    # a new window: four more failures do not throttle again
    for i in range(4):
        _fail(services, org_id, later + timedelta(seconds=i))
    _check(services, org_id, later + timedelta(seconds=5))


def test_a_hundred_consecutive_totp_failures_lock_until_an_unlock(services: Services) -> None:
    org_id, _ = _user(services)
    for i in range(100):  # 5 every 15 minutes, as fast as the throttle allows
        _fail(services, org_id, NOW + timedelta(minutes=15 * (i // 5), seconds=i % 5))
    with pytest.raises(TotpLocked):
        _check(services, org_id, NOW + timedelta(days=30))
    assert _types(services, org_id).count(EventType.LOCKOUT_PERMANENT) == 1
    with services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, org_id, "alice"))
        assert limits.clear(uow.session, user) == [limits.TOTP]
    _check(services, org_id, NOW + timedelta(days=30))


def test_a_success_resets_the_count(services: Services) -> None:
    org_id, _ = _user(services)
    for i in range(4):
        _fail(services, org_id, NOW + timedelta(seconds=i))
    with services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, org_id, "alice"))
        limits.record_success(uow.session, user, limits.TOTP, None, NOW + timedelta(seconds=5))
    _fail(services, org_id, NOW + timedelta(seconds=10))
    _check(services, org_id, NOW + timedelta(seconds=11))
    assert _throttled_until(services, org_id, NOW + timedelta(seconds=11)) is None
    assert EventType.LOCKOUT_STARTED not in _types(services, org_id)


@pytest.mark.parametrize(
    ("client_ip", "caller", "key"),
    [
        ("198.51.100.7", "127.0.0.1", "198.51.100.7"),
        (None, "127.0.0.1", "127.0.0.1"),
        ("2001:db8:1:2:3:4:5:6", None, "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", None, "192.0.2.1"),
        (None, None, sources.UNKNOWN_SOURCE),
    ],
)
def test_source_keys(client_ip: str | None, caller: str | None, key: str) -> None:
    assert sources.source_key(client_ip, caller) == key


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        (" 192.0.2.1 ", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
    ],
)
def test_client_ips_are_recorded_canonical(given: str, recorded: str) -> None:
    assert limits.parse_client_ip(given) == recorded


@pytest.mark.parametrize("bad", ["", "999.1.1.1", "fe80::1%eth0", "1.2.3.4/24", "x" * 65])
def test_what_is_no_address_is_refused_naming_client_ip(bad: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        limits.parse_client_ip(bad)
    assert refused.value.field == "client_ip"


@pytest.mark.postgres
def test_count_holds_across_two_processes_engines(pg_services: Services, pg_settings) -> None:  # type: ignore[no-untyped-def]
    other = Services.build(pg_settings)
    try:
        org_id, _ = _user(pg_services)
        for i in range(5):
            _fail(pg_services if i % 2 else other, org_id, NOW + timedelta(seconds=i))
        with pytest.raises(TooManyAttempts):
            _check(other, org_id, NOW + timedelta(seconds=6))
        with pytest.raises(TooManyAttempts):
            _check(pg_services, org_id, NOW + timedelta(seconds=6))
    finally:
        other.close()
