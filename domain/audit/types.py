"""The catalogue of audit event types and outcomes. Every event the service writes is
one of these; the names are part of the contract."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    ENROLLMENT_STARTED = "mfa.enrollment.started"
    ENROLLMENT_CONFIRMED = "mfa.enrollment.confirmed"
    ENROLLMENT_FAILED = "mfa.enrollment.failed"
    MFA_RESET = "mfa.reset"
    REGENERATION_REQUESTED = "backup_codes.regeneration.requested"
    REGENERATION_REFUSED = "backup_codes.regeneration.refused"
    REGENERATION_STARTED = "backup_codes.regeneration.started"
    REGENERATION_SUCCEEDED = "backup_codes.regeneration.succeeded"
    REGENERATION_FAILED = "backup_codes.regeneration.failed"
    TOTP_ACCEPTED = "mfa.totp.accepted"
    TOTP_REJECTED = "mfa.totp.rejected"
    TOTP_REPLAYED = "mfa.totp.replayed"
    CODES_DEACTIVATED = "backup_codes.deactivated"
    CODES_REVOKED = "backup_codes.revoked"
    SHEET_RENDERED = "backup_codes.sheet.rendered"
    SHEET_RETRIEVED = "backup_codes.sheet.retrieved"
    SHEET_RETRIEVAL_REFUSED = "backup_codes.sheet.retrieval_refused"
    SHEET_EXPIRED = "backup_codes.sheet.expired"
    CODE_ACCEPTED = "backup_codes.code.accepted"
    CODE_REJECTED = "backup_codes.code.rejected"
    SIGNIN_REFUSED = "backup_codes.signin.refused"
    LOCKOUT_STARTED = "user.lockout.started"
    LOCKOUT_ENDED = "user.lockout.ended"
    LOCKOUT_PERMANENT = "user.lockout.permanent"
    LOCKOUT_CLEARED = "user.lockout.cleared"
    POLICY_CHANGED = "org.policy.changed"
    ORG_CREATED = "org.created"
    USER_CREATED = "user.created"
    USER_UPSERTED = "user.upserted"  # details name the fields that changed, never a value
    USER_DELETED = "user.deleted"
    TOKEN_ISSUED = "token.issued"  # noqa: S105 (an event name, not a secret)
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 (an event name, not a secret)
    ACCESS_DENIED = "api.access.denied"  # a token used on an endpoint its role may not call
    SECRETS_REKEYED = "keys.secrets_rekeyed"  # secrets at rest re-encrypted under the newest key
    AUDIT_READ = "audit.read"
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_VERIFIED = "audit.verified"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    USER_REPUDIATED = "user.repudiated"  # the user said "this wasn't me" (domain.notify)
    NOTIFICATION_SENT = "notification.sent"
    NOTIFICATION_FAILED = "notification.failed"
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_DELETED = "webhook.deleted"
    WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated"  # noqa: S105 (an event name, not a secret)
    WEBHOOK_DISABLED = "webhook.disabled"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"
