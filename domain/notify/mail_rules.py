"""Which audit event becomes which mail to the user: pure rules, no I/O.

NIST SP 800-63B-4 asks that the subscriber be told, by a channel apart from the
transaction, when an authenticator is bound and when recovery codes are used or
replaced; the administrator's interventions and the lockouts are told as well.
Everything else in the trail sends nothing.
"""

from __future__ import annotations

from enum import StrEnum

from domain.audit.types import EventType
from domain.codes import LOW_WATERMARK


class MailKind(StrEnum):
    ENROLLED = "enrolled"
    CODES_GENERATED = "codes_generated"
    CODE_USED = "code_used"
    CODES_REVOKED = "codes_revoked"
    MFA_RESET = "mfa_reset"
    UNLOCKED = "unlocked"
    THROTTLED = "throttled"
    LOCKED = "locked"
    ADDRESS_CHANGED = "address_changed"
    REPUDIATED = "repudiated"


class RecipientKind(StrEnum):
    """Which of the user's addresses a mail goes to; one mail each, neither shown the other."""

    EMAIL = "email"
    RECOVERY_EMAIL = "recovery_email"


_KIND_OF_EVENT: dict[str, MailKind] = {
    EventType.ENROLLMENT_CONFIRMED: MailKind.ENROLLED,
    EventType.REGENERATION_SUCCEEDED: MailKind.CODES_GENERATED,
    EventType.CODE_ACCEPTED: MailKind.CODE_USED,
    EventType.CODES_REVOKED: MailKind.CODES_REVOKED,
    EventType.MFA_RESET: MailKind.MFA_RESET,
    EventType.LOCKOUT_CLEARED: MailKind.UNLOCKED,
    # Only the user-wide throttle and the permanent lock: a per-source throttle is
    # one attacker's problem, and telling the user of each would be noise.
    EventType.LOCKOUT_STARTED: MailKind.THROTTLED,
    EventType.LOCKOUT_PERMANENT: MailKind.LOCKED,
    EventType.USER_REPUDIATED: MailKind.REPUDIATED,
}

# The user asked for this one: told even where the organization turned mails off.
_ALWAYS_SENT = frozenset({MailKind.REPUDIATED})
# A mail about the repudiation itself offers no second "this wasn't me".
_WITHOUT_REPUDIATION_LINK = frozenset({MailKind.REPUDIATED})

# At or below this many remaining codes, the "code used" mail says to regenerate.
REGENERATE_AT_REMAINING = LOW_WATERMARK


def kind_of(event_type: str) -> MailKind | None:
    """The mail an audit event of this type causes, if any (address changes come
    through domain.notify.address_changed, since the event names no address)."""
    return _KIND_OF_EVENT.get(event_type)


def should_send(kind: MailKind, notify_users: bool) -> bool:
    return notify_users or kind in _ALWAYS_SENT


def offers_repudiation(kind: MailKind) -> bool:
    return kind not in _WITHOUT_REPUDIATION_LINK


def recipients(email: str | None, recovery_email: str | None) -> list[tuple[RecipientKind, str]]:
    """The addresses to write to, one mail each; the same address twice gets one."""
    found: list[tuple[RecipientKind, str]] = []
    if email:
        found.append((RecipientKind.EMAIL, email))
    if recovery_email and recovery_email.strip().lower() != (email or "").strip().lower():
        found.append((RecipientKind.RECOVERY_EMAIL, recovery_email))
    return found


def should_regenerate(remaining: int | None) -> bool:
    return remaining is not None and remaining <= REGENERATE_AT_REMAINING
