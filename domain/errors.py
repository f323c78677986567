"""The domain's exceptions, one per problem slug of docs/api.md.

They carry the slug, a title and a detail, never an HTTP status: api/errors.py
maps each slug to its status in one table.

Messages never carry a code, a TOTP value, a secret or a token.
"""

from __future__ import annotations


class ConfigurationError(Exception):
    """Settings that cannot work; raised at start-up, never during a request."""


class DomainError(Exception):
    slug = "domain-error"
    title = "Request refused"
    # The field at fault (invalid-request) and the seconds to wait (throttles,
    # not-ready): the API turns them into the body's "field" and Retry-After.
    field: str | None = None
    retry_after: int | None = None

    def __init__(self, detail: str | None = None, **extra: object) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class InvalidRequest(DomainError):
    slug, title = "invalid-request", "The request is not valid"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.field = field


class Unauthenticated(DomainError):
    slug, title = "unauthenticated", "Authentication required"


class Forbidden(DomainError):
    slug, title = "forbidden", "This token may not do that"


class CsrfFailed(DomainError):
    """A cookie-authenticated request without the page's X-CSRF-Token (api.auth)."""

    slug, title = "csrf-failed", "The request lacks this page's CSRF token"


class NotFound(DomainError):
    slug, title = "not-found", "Not found"


class BackupCodesDisabled(DomainError):
    slug, title = "backup-codes-disabled", "Backup codes are turned off"


class MfaNotEnrolled(DomainError):
    slug, title = "mfa-not-enrolled", "Multi-factor authentication is not set up"


class AlreadyEnrolled(DomainError):
    slug, title = "already-enrolled", "Already enrolled"


class NoPendingEnrollment(DomainError):
    slug, title = "no-pending-enrollment", "No enrollment is waiting for confirmation"


class InvalidTotp(DomainError):
    slug, title = "invalid-totp", "The authenticator code is not valid"


class TooManyAttempts(DomainError):
    slug, title = "too-many-attempts", "Too many failed attempts"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail or f"Try again in {retry_after} seconds", retry_after=retry_after)
        self.retry_after = retry_after


class BackupCodesLocked(DomainError):
    """The consecutive-failure cap: no Retry-After, it does not pass with time."""

    slug, title = "backup-codes-locked", "Sign-in with backup codes is locked"


class TotpLocked(DomainError):
    slug, title = "totp-locked", "The authenticator code is locked"


class RegenerationPending(DomainError):
    slug, title = "regeneration-pending", "A regeneration is already in progress"

    def __init__(self, regeneration_id: str) -> None:
        super().__init__(
            "Wait for the pending regeneration to finish", regeneration_id=regeneration_id
        )
        self.regeneration_id = regeneration_id


class Busy(DomainError):
    slug, title = "busy", "Too many verifications in progress"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("Retry in a moment", retry_after=retry_after)
        self.retry_after = retry_after


class IdempotencyKeyReused(DomainError):
    slug, title = "idempotency-key-reused", "This Idempotency-Key was used with another body"


class NotReady(DomainError):
    slug, title = "not-ready", "The sheet is not ready yet"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("The regeneration is still in progress", retry_after=retry_after)
        self.retry_after = retry_after


class RegenerationFailed(DomainError):
    slug, title = "regeneration-failed", "The regeneration failed"


class SheetGone(DomainError):
    slug, title = "sheet-gone", "The sheet was already retrieved"


class SheetExpired(DomainError):
    slug, title = "sheet-expired", "The sheet expired before it was retrieved"


class TicketGone(DomainError):
    slug, title = "ticket-gone", "This link was used already or has expired"


class Conflict(DomainError):
    slug, title = "conflict", "Conflict"


# The refusals a (token, source)'s minute budget counts (domain.throttles), as the API
# counts its 401, 403 and 404 answers; tests/unit/test_problem_statuses.py keeps this
# list and api/errors.py's statuses together.
BUDGETED_REFUSALS: tuple[type[DomainError], ...] = (
    Unauthenticated,
    Forbidden,
    CsrfFailed,
    NotFound,
    BackupCodesDisabled,
)


class TooManyWebhooks(DomainError):
    slug, title = "too-many-webhooks", "The organization has as many webhooks as it may"
