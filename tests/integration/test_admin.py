"""Administration (domain.admin): policy, revocation, MFA reset; and GET /v1/me/mfa
(its JSON as api.representations renders it; a policy body typed as api.bodies does)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from api import bodies, representations
from api.bodies import typed
from api.errors import status_of
from domain import accounts, admin, audit, limits, tokens
from domain.audit.types import EventType, Outcome
from domain.clock import rfc3339_millis
from domain.errors import (
    BackupCodesDisabled,
    InvalidRequest,
    MfaNotEnrolled,
    NotFound,
    RegenerationFailed,
)
from domain.models import AttemptLimit, AuthFailure, BackupCode, Sheet, TotpEnrollment
from domain.regeneration import retrieve_sheet
from infra.db import utcnow
from infra.services import Services
from tests.integration.codes_fixtures import code_rows, fail, queue_rotation, sheet_codes, verify
from tests.support.builders import ADMIN_CTX as ADMIN
from tests.support.builders import NOW, Holder, holder, new_org, new_user
from tests.support.codes import legacy_codes
from tests.support.records import events, load_regeneration, process

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def status(svc: Services, h: Holder) -> dict[str, Any]:
    """GET /v1/me/mfa's JSON: the domain's status as the API renders it."""
    with svc.unit_of_work() as uow:
        shown = admin.mfa_status(
            uow.session, svc, accounts.get_user(uow.session, h.org_id, h.external_id)
        )
    return representations.mfa_status(shown)


def policy_of(svc: Services, org_id: str) -> dict[str, Any]:
    with svc.unit_of_work() as uow:
        return representations.policy(admin.get_policy(uow.session, org_id))


def put_policy(svc: Services, org_id: str, body: object) -> dict[str, Any]:
    """PUT /v1/org/policy's path: the body typed at the edge, then the use case."""
    policy = typed(body, bodies.Policy)
    with svc.unit_of_work() as uow:
        changed = admin.put_policy(
            uow, org_id, policy.backup_codes_enabled, policy.code_count, ADMIN
        )
        return representations.policy(changed)


def count(svc: Services, model: type[Any], user_id: str) -> int:
    with svc.unit_of_work() as uow:
        return int(
            uow.session.execute(
                select(func.count()).select_from(model).where(model.user_id == user_id)
            ).scalar_one()
        )


# --- policy --------------------------------------------------------------------------

# The mail settings of a new organization (domain.notify), shown with the policy.
MAIL = {"notify_users": True, "support_contact": None}


def test_a_new_organization_has_the_default_policy(services: Services) -> None:
    org_id = new_org(services)
    assert policy_of(services, org_id) == {"backup_codes_enabled": True, "code_count": 5, **MAIL}


def test_put_policy_replaces_it_and_audits_old_and_new(services: Services) -> None:
    org_id = new_org(services)
    body = {"backup_codes_enabled": False, "code_count": 12}
    assert put_policy(services, org_id, body) == {**body, **MAIL}
    assert policy_of(services, org_id) == {**body, **MAIL}
    [changed] = events(services, org_id, EventType.POLICY_CHANGED)
    assert changed.details == {
        "old": {"backup_codes_enabled": True, "code_count": 5, **MAIL},
        "new": {**body, **MAIL},
    }
    assert changed.actor_role == "admin"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"backup_codes_enabled": True, "code_count": 0}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": 21}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": "5"}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": True}, "code_count"),
        ({"backup_codes_enabled": True, "code_count": 5.0}, "code_count"),
        ({"backup_codes_enabled": "yes", "code_count": 5}, "backup_codes_enabled"),
        ({"backup_codes_enabled": None, "code_count": 5}, "backup_codes_enabled"),
        ({"backup_codes_enabled": True, "code_count": 5, "extra": 1}, "extra"),
        ({"code_count": 5}, "backup_codes_enabled"),
        ({"backup_codes_enabled": True}, "code_count"),
        ({}, "backup_codes_enabled"),
    ],
    ids=[
        "zero",
        "21",
        "string",
        "bool",
        "float",
        "enabled-string",
        "enabled-null",
        "unknown",
        "no-enabled",
        "no-count",
        "empty",
    ],
)
def test_put_policy_refuses_a_bad_body_naming_the_field_and_changes_nothing(
    services: Services, body: dict[str, Any], field: str
) -> None:
    org_id = new_org(services)
    with pytest.raises(InvalidRequest) as refused:
        put_policy(services, org_id, body)
    assert refused.value.field == field
    assert status_of(refused.value) == 422
    assert policy_of(services, org_id) == {"backup_codes_enabled": True, "code_count": 5, **MAIL}
    assert events(services, org_id, EventType.POLICY_CHANGED) == []


def test_put_policy_refuses_a_body_that_is_not_an_object(services: Services) -> None:
    org_id = new_org(services)
    with pytest.raises(InvalidRequest) as refused:
        put_policy(services, org_id, [True, 5])
    assert refused.value.field == "body"


def test_turning_backup_codes_off_refuses_sign_in_and_on_again_allows_it(
    services: Services,
) -> None:
    h = holder(services)
    put_policy(services, h.org_id, {"backup_codes_enabled": False, "code_count": 5})
    with pytest.raises(BackupCodesDisabled):
        verify(services, h, h.codes[0])
    put_policy(services, h.org_id, {"backup_codes_enabled": True, "code_count": 5})
    assert verify(services, h, h.codes[0]).accepted


# --- revocation ----------------------------------------------------------------------


def test_revoke_deactivates_every_active_code_and_audits_how_many_were_usable(
    services: Services,
) -> None:
    h = holder(services)
    assert verify(services, h, h.codes[0]).accepted
    with services.unit_of_work() as uow:
        admin.revoke_codes(uow, h.org_id, h.external_id, ADMIN)
    rows = code_rows(services, h.user_id)
    assert len(rows) == 5 and all(r.deactivated_at is not None for r in rows)
    [revoked] = events(services, h.org_id, EventType.CODES_REVOKED)
    assert (revoked.outcome, revoked.details, revoked.user_id) == (
        Outcome.SUCCESS,
        {"count": 4},
        h.external_id,
    )
    assert not any(
        verify(services, h, c, NOW + timedelta(seconds=1)).accepted for c in h.codes[1:3]
    )
    assert status(services, h)["backup_codes"] is None


@pytest.mark.parametrize("action", [admin.revoke_codes, admin.reset_mfa])
def test_revoke_and_reset_answer_not_found_for_an_unknown_or_foreign_user(
    services: Services, action: Any
) -> None:
    h = holder(services)
    other_org = new_org(services)
    for org_id, external_id in ((h.org_id, "nobody"), (other_org, h.external_id)):
        with pytest.raises(NotFound), services.unit_of_work() as uow:
            action(uow, org_id, external_id, ADMIN)
    assert all(r.deactivated_at is None for r in code_rows(services, h.user_id))
    assert count(services, TotpEnrollment, h.user_id) == 1


# --- reset ---------------------------------------------------------------------------


def test_reset_removes_enrollment_and_codes_clears_the_lockout_and_is_audited(
    services: Services,
) -> None:
    h = holder(services)
    fail(services, h, 5)
    assert count(services, AttemptLimit, h.user_id) == 1
    with services.unit_of_work() as uow:
        _, user_token = tokens.issue(uow, h.org_id, h.external_id, "user", audit.CLI)
        _, service_token = tokens.issue(uow, h.org_id, h.external_id, "service", audit.CLI)
    with services.unit_of_work() as uow:
        admin.reset_mfa(uow, h.org_id, h.external_id, ADMIN)
    with services.unit_of_work() as uow:
        # The user's tokens are revoked; a service principal of the same name is not the user.
        assert tokens.authenticate(uow.session, user_token) is None
        assert tokens.authenticate(uow.session, service_token) is not None
    assert count(services, BackupCode, h.user_id) == 0
    assert count(services, TotpEnrollment, h.user_id) == 0
    assert count(services, AuthFailure, h.user_id) == 0
    assert count(services, AttemptLimit, h.user_id) == 0  # throttles and locks cleared
    [reset] = events(services, h.org_id, EventType.MFA_RESET)
    assert reset.details == {
        "was_enrolled": True,
        "codes_removed": 5,
        "regenerations_failed": 0,
        "tokens_revoked": 1,
    }
    assert reset.actor_principal_id == "root"
    [revoked] = events(services, h.org_id, EventType.TOKEN_REVOKED)
    assert (revoked.actor_principal_id, revoked.user_id) == ("root", h.external_id)
    assert status(services, h) == {
        "enrolled": False,
        "enrolled_at": None,
        "backup_codes_enabled": True,
        "backup_codes": None,
        "last_set_expired_unseen": False,
        "limits": {
            "totp_throttled_until": None,
            "totp_locked": False,
            "backup_codes_locked": False,
        },
    }
    with pytest.raises(MfaNotEnrolled):  # not TooManyAttempts: the lockout is gone
        verify(services, h, h.codes[0], NOW + timedelta(minutes=1))


def test_reset_fails_unfinished_regenerations_and_deletes_their_sheets(
    services: Services,
) -> None:
    h = holder(services)
    ready = queue_rotation(services, h)
    assert process(services, ready) == "ready"
    new_code = sheet_codes(services, ready)[0]
    queued = queue_rotation(services, h, NOW + timedelta(seconds=1))
    with services.unit_of_work() as uow:
        admin.reset_mfa(uow, h.org_id, h.external_id, ADMIN)
    for regeneration_id in (ready, queued):
        reg = load_regeneration(services, regeneration_id)
        assert (reg.status, reg.failure) == ("failed", "mfa-not-enrolled")
        assert reg.completed_at is not None
    with services.unit_of_work() as uow:
        assert uow.session.get(Sheet, ready) is None
    failed = events(services, h.org_id, EventType.REGENERATION_FAILED)
    assert [e.details["regeneration_id"] for e in failed] == [ready, queued]
    assert [e.details["sheet_deleted"] for e in failed] == [True, False]
    # the queued one, delivered now, is left failed; the sheet is not served
    assert process(services, queued) == "failed"
    with pytest.raises(RegenerationFailed), services.unit_of_work() as uow:
        user = accounts.get_user(uow.session, h.org_id, h.external_id)
        retrieve_sheet(uow, services, user, ready, "text", NOW, ADMIN)
    with pytest.raises(MfaNotEnrolled):
        verify(services, h, new_code)


def test_reset_of_a_user_never_enrolled_is_harmless_and_audited(services: Services) -> None:
    org_id = new_org(services)
    new_user(services, org_id, "bob")
    with services.unit_of_work() as uow:
        admin.reset_mfa(uow, org_id, "bob", ADMIN)
    [reset] = events(services, org_id, EventType.MFA_RESET)
    assert reset.details == {
        "was_enrolled": False,
        "codes_removed": 0,
        "regenerations_failed": 0,
        "tokens_revoked": 0,
    }


# --- GET /v1/me/mfa --------------------------------------------------------------------


def test_status_of_an_enrolled_user_with_a_fresh_set(services: Services) -> None:
    h = holder(services)
    body = status(services, h)
    assert body == {
        "enrolled": True,
        "enrolled_at": "2026-11-28T12:00:00.000Z",
        "backup_codes_enabled": True,
        "backup_codes": {
            "set_id": h.set_id,
            "remaining": 5,
            "total": 5,
            "low": False,
            "generated_at": "2026-11-28T12:00:00.000Z",
            "last_used_at": None,
            "format": 16,
        },
        "last_set_expired_unseen": False,
        "limits": {
            "totp_throttled_until": None,
            "totp_locked": False,
            "backup_codes_locked": False,
        },
    }
    assert RFC3339_MS.match(body["backup_codes"]["generated_at"])


def test_status_names_an_older_set_by_its_12_symbols_and_when_it_was_last_used(
    services: Services,
) -> None:
    h = holder(services, codes=legacy_codes(5))
    assert status(services, h)["backup_codes"]["format"] == 12
    assert verify(services, h, h.codes[0], NOW + timedelta(minutes=3)).accepted
    assert verify(services, h, h.codes[1], NOW + timedelta(minutes=7)).accepted
    current = status(services, h)["backup_codes"]
    assert (current["format"], current["remaining"]) == (12, 3)
    assert current["last_used_at"] == rfc3339_millis(NOW + timedelta(minutes=7))


def test_status_shows_the_limits_as_they_stand(services: Services) -> None:
    h = holder(services)
    start = utcnow()
    with services.unit_of_work() as uow:
        user = uow.lock_user(accounts.get_user(uow.session, h.org_id, h.external_id))
        for i in range(5):
            limits.record_failure(
                uow,
                user,
                limits.TOTP,
                None,
                start + timedelta(seconds=i),
                ADMIN,
                services.limits,
            )
    shown = status(services, h)["limits"]
    assert shown["totp_throttled_until"] == rfc3339_millis(start + timedelta(minutes=15))
    assert (shown["totp_locked"], shown["backup_codes_locked"]) == (False, False)
    with services.unit_of_work() as uow:
        admin.unlock(uow, h.org_id, h.external_id, ADMIN)
    assert status(services, h)["limits"]["totp_throttled_until"] is None
    [cleared] = events(services, h.org_id, EventType.LOCKOUT_CLEARED)
    assert cleared.details == {"factors": ["totp"]}


def test_status_is_low_when_two_or_fewer_remain(services: Services) -> None:
    h = holder(services)
    lows = []
    for i, code in enumerate(h.codes):
        assert verify(services, h, code, NOW + timedelta(seconds=i)).accepted
        current = status(services, h)["backup_codes"]
        lows.append((current["remaining"], current["total"], current["low"]))
    assert lows == [(4, 5, False), (3, 5, False), (2, 5, True), (1, 5, True), (0, 5, True)]


def test_status_follows_the_new_set_after_a_regeneration(services: Services) -> None:
    h = holder(services)
    regeneration_id = queue_rotation(services, h)
    assert process(services, regeneration_id, NOW + timedelta(minutes=3)) == "ready"
    current = status(services, h)["backup_codes"]
    assert current["set_id"] == load_regeneration(services, regeneration_id).set_id != h.set_id
    assert (current["remaining"], current["total"]) == (5, 5)
    assert current["generated_at"] == "2026-11-28T12:03:00.000Z"


def test_status_of_a_pending_enrollment_under_a_policy_that_is_off(services: Services) -> None:
    h = holder(services, enabled=False, confirmed=False)
    body = status(services, h)
    assert (body["enrolled"], body["backup_codes_enabled"]) == (False, False)
    assert body["backup_codes"]["remaining"] == 5
