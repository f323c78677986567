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

MAX_SUPPORT_CONTACT = 200


@dataclass(frozen=True)
class Policy:
    """An organization's policy as the API shows it."""

    backup_codes_enabled: bool
    code_count: int
    notify_users: bool = True
    support_contact: str | None = None

    @classmethod
    def of(cls, org: Organization) -> Policy:
        return cls(
            org.backup_codes_enabled,
            org.code_count,
            True if org.notify_users is None else org.notify_users,
            org.support_contact,
        )


@dataclass(frozen=True)
class NotifyChange:
    """The mail part of a PUT: a value left out (None here) keeps the one held."""

    notify_users: bool | None = None
    support_contact: str | None = None
    clear_support_contact: bool = False  # sent as null: removed


def _support_contact(value: str) -> str | None:
    """Free text, shown in mails (escaped there): printable, one line, 200 at most."""
    text = value.strip()
    if len(text) > MAX_SUPPORT_CONTACT:
        raise InvalidRequest(
            f"support_contact is at most {MAX_SUPPORT_CONTACT} characters", field="support_contact"
        )
    if any(not ch.isprintable() for ch in text):
        # A line break or control character has no place in one line of contact text.
        raise InvalidRequest(
            "support_contact must be one line of printable text", field="support_contact"
        )
    return text or None


def set_policy(
    uow: UnitOfWork,
    org: Organization,
    enabled: bool,
    code_count: int,
    ctx: audit.Context,
    notify: NotifyChange | None = None,
) -> Organization:
    """Replace the policy (its shape was checked at the edge; its range is a rule)."""
    if not MIN_CODES <= code_count <= MAX_CODES:
        raise InvalidRequest(f"code_count must be {MIN_CODES} to {MAX_CODES}", field="code_count")
    notify = notify or NotifyChange()
    contact = org.support_contact
    if notify.clear_support_contact:
        contact = None
    elif notify.support_contact is not None:
        contact = _support_contact(notify.support_contact)
    before = Policy.of(org)
    org.backup_codes_enabled = enabled
    org.code_count = code_count
    if notify.notify_users is not None:
        org.notify_users = notify.notify_users
    org.support_contact = contact
    audit.append(
        uow,
        org.id,
        EventType.POLICY_CHANGED,
        Outcome.SUCCESS,
        ctx,
        details={"old": _details(before), "new": _details(Policy.of(org))},
    )
    return org


def _details(policy: Policy) -> dict[str, object]:
    return {
        "backup_codes_enabled": policy.backup_codes_enabled,
        "code_count": policy.code_count,
        "notify_users": policy.notify_users,
        "support_contact": policy.support_contact,
    }
