"""Organization policy. (Attempt limits are domain.limits.)"""

from __future__ import annotations

from dataclasses import dataclass

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.codes import MAX_CODES as MAX_CODES
from domain.codes import MIN_CODES as MIN_CODES
from domain.errors import InvalidRequest
from domain.models import Organization
from domain.uow import UnitOfWork


@dataclass(frozen=True)
class Policy:
    """An organization's policy as the API shows it."""

    backup_codes_enabled: bool
    code_count: int

    @classmethod
    def of(cls, org: Organization) -> Policy:
        return cls(org.backup_codes_enabled, org.code_count)


def set_policy(
    uow: UnitOfWork, org: Organization, enabled: bool, code_count: int, ctx: audit.Context
) -> Organization:
    """Replace the policy (its shape was checked at the edge; its range is a rule)."""
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
