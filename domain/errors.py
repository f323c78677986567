"""The domain's exceptions, one per problem slug of API.md.

Messages never carry a code, a TOTP value, a secret or a token.
"""

from __future__ import annotations


class ConfigurationError(Exception):
    """Settings that cannot work; raised at start-up, never during a request."""


class DomainError(Exception):
    slug = "domain-error"
    status = 400
    title = "Request refused"

    def __init__(self, detail: str | None = None, **extra: object) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class InvalidRequest(DomainError):
    slug, status, title = "invalid-request", 422, "The request is not valid"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.field = field


class Unauthenticated(DomainError):
    slug, status, title = "unauthenticated", 401, "Authentication required"


class Forbidden(DomainError):
    slug, status, title = "forbidden", 403, "This token may not do that"


class NotFound(DomainError):
    slug, status, title = "not-found", 404, "Not found"


class BackupCodesDisabled(DomainError):
    slug, status, title = "backup-codes-disabled", 403, "Backup codes are turned off"


class MfaNotEnrolled(DomainError):
    slug, status, title = "mfa-not-enrolled", 409, "Multi-factor authentication is not set up"


class AlreadyEnrolled(DomainError):
    slug, status, title = "already-enrolled", 409, "Already enrolled"


class NoPendingEnrollment(DomainError):
    slug, status, title = "no-pending-enrollment", 409, "No enrollment is waiting for confirmation"


class InvalidTotp(DomainError):
    slug, status, title = "invalid-totp", 422, "The authenticator code is not valid"


class TooManyAttempts(DomainError):
    slug, status, title = "too-many-attempts", 429, "Too many failed attempts"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail or f"Try again in {retry_after} seconds", retry_after=retry_after)
        self.retry_after = retry_after


class BackupCodesLocked(DomainError):
    """The consecutive-failure cap: no Retry-After, it does not pass with time."""

    slug, status, title = "backup-codes-locked", 429, "Sign-in with backup codes is locked"


class TotpLocked(DomainError):
    slug, status, title = "totp-locked", 429, "The authenticator code is locked"


class RegenerationPending(DomainError):
    slug, status, title = "regeneration-pending", 409, "A regeneration is already in progress"

    def __init__(self, regeneration_id: str) -> None:
        super().__init__(
            "Wait for the pending regeneration to finish", regeneration_id=regeneration_id
        )
        self.regeneration_id = regeneration_id


class Busy(DomainError):
    slug, status, title = "busy", 503, "Too many verifications in progress"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("Retry in a moment", retry_after=retry_after)
        self.retry_after = retry_after


class IdempotencyKeyReused(DomainError):
    slug, status, title = (
        "idempotency-key-reused",
        422,
        "This Idempotency-Key was used with another body",
    )


class NotReady(DomainError):
    slug, status, title = "not-ready", 409, "The sheet is not ready yet"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("The regeneration is still in progress", retry_after=retry_after)
        self.retry_after = retry_after


class RegenerationFailed(DomainError):
    slug, status, title = "regeneration-failed", 409, "The regeneration failed"


class SheetGone(DomainError):
    slug, status, title = "sheet-gone", 410, "The sheet was already retrieved"


class SheetExpired(DomainError):
    slug, status, title = "sheet-expired", 410, "The sheet expired before it was retrieved"


class Conflict(DomainError):
    slug, status, title = "conflict", 409, "Conflict"
