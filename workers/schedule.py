"""The beat schedule: the periodic maintenance, all on the maintenance queue.

Exactly one beat runs per deployment; the tasks are idempotent anyway, so a
second beat would cost work, not correctness.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from infra.settings import Settings
from workers.app import (
    TASK_CHECKPOINT,
    TASK_EXPIRE_SHEETS,
    TASK_PURGE,
    TASK_REPUBLISH_STALE,
    maintenance_queue,
)

# Seconds. A request whose publish failed waits at most about this long (plus the
# outbox grace, workers.tasks.OUTBOX_GRACE_SECONDS) before it is sent again.
REPUBLISH_EVERY = 10.0
# A sheet outlives its expires_at by at most this long.
EXPIRE_EVERY = 30.0


def _entry(settings: Settings, task: str, every: float) -> dict[str, Any]:
    return {
        "task": task,
        "schedule": every,
        "options": {
            "queue": maintenance_queue(settings),
            # While no worker consumes, the beat keeps sending; a run that waited longer
            # than its period is superseded by the next one, so drop it instead of
            # letting a backlog of identical sweeps build up.
            "expires": every,
        },
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        TASK_REPUBLISH_STALE: _entry(settings, TASK_REPUBLISH_STALE, REPUBLISH_EVERY),
        TASK_EXPIRE_SHEETS: _entry(settings, TASK_EXPIRE_SHEETS, EXPIRE_EVERY),
        TASK_CHECKPOINT: _entry(
            settings, TASK_CHECKPOINT, float(settings.checkpoint_interval_seconds)
        ),
        TASK_PURGE: _entry(settings, TASK_PURGE, float(settings.purge_interval_seconds)),
    }


def install_schedule(celery_app: Celery, settings: Settings) -> None:
    """Put the schedule on the app (what `mfa-codes beat` runs)."""
    celery_app.conf.beat_schedule = beat_schedule(settings)
