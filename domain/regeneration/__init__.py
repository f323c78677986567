"""The regeneration pipeline: a new set of backup codes for a user, asked at intake,
made by a worker, swept by the beat.

- intake: the request is checked and recorded with its outbox row and audit event
  in one transaction, and answered at once (202); the TOTP value waits encrypted.
- worker: one transaction under the user's row lock judges the TOTP for the moment
  the request was accepted, replaces the code set (code_sets) and stores the sheet.
- sweep: what stayed queued too long is dispatched again; sheets past their time expire.
- idempotency: the Idempotency-Key and the keyed fingerprint of the body.

This face names what the API, the workers and the CLI call.
"""

from domain.models import FINISHED
from domain.regeneration.intake import (
    RequestOutcome,
    get_regeneration,
    queue_regeneration,
    request_regeneration,
    retrieve_sheet,
    retrieve_sheet_forms,
)
from domain.regeneration.sweep import expire_sheets, stale_regenerations
from domain.regeneration.worker import (
    MISSING,
    PROCESSING_FAILED,
    abandon,
    mark_started,
    process_regeneration,
)

__all__ = [
    "FINISHED",
    "MISSING",
    "PROCESSING_FAILED",
    "RequestOutcome",
    "abandon",
    "expire_sheets",
    "get_regeneration",
    "mark_started",
    "process_regeneration",
    "queue_regeneration",
    "request_regeneration",
    "retrieve_sheet",
    "retrieve_sheet_forms",
    "stale_regenerations",
]
