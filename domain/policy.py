"""Organization policy. (Attempt limits are domain.limits.)"""

from __future__ import annotations

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.errors import InvalidRequest
from domain.models import Organization
from domain.uow import UnitOfWork

MIN_CODES, MAX_CODES = 1, 20


def set_policy(
    uow: UnitOfWork, org: Organization, enabled: object, code_count: object, ctx: audit.Context
) -> Organization:
    if not isinstance(enabled, bool):
        raise InvalidRequest(
            "backup_codes_enabled must be true or false", field="backup_codes_enabled"
        )
    if isinstance(code_count, bool) or not isinstance(code_count, int):
        raise InvalidRequest("code_count must be a whole number", field="code_count")
    if not MIN_CODES <= code_count <= MAX_CODES:
        raise InvalidRequest(f"code_count must be {MIN_CODES} to {MAX_CODES}", field="code_count")
    old = {"backup_codes_enabled": org.backup_codes_enabled, "code_count": org.code_count}
    org.backup_codes_enabled = enabled
    org.code_count = code_count
    new = {"backup_codes_enabled": enabled, "code_count": code_count}
    audit.append(
        uow,
        org.id,
        EventType.POLICY_CHANGED,
        Outcome.SUCCESS,
        ctx,
        details={"old": old, "new": new},
    )
    return org
