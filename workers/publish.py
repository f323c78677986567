"""Publishing after commit: the outbox rows of a transaction reach the broker once it
has committed, and are marked published; whatever fails stays pending for the beat.

A request never fails because the broker is down: a publish and its confirm wait at
most PUBLISH_TIMEOUT each, with one retry after a reconnect (about 4 to 6 seconds in
the worst case); the failure is logged (the exception's type, never its text, which
may name the broker's URL) and swallowed. The row's `published_at` stays NULL and
`maintenance.republish_stale` sends it later.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from domain import outbox
from domain.uow import Committed
from infra.db import utcnow
from infra.services import Services
from workers.app import queue_for

log = logging.getLogger(__name__)

# One quick retry, then give up: the outbox row makes a failed publish a delay only.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
PING_TIMEOUT = 2  # seconds (whole: kombu types ensure_connection's timeout as an int)
PUBLISH_TIMEOUT = 2.0
FLUSH_BATCH = 100
MARK_GATHER_SECONDS = 0.05
FLUSH_MAX_BATCHES = 20

Row = tuple[int, str, dict[str, Any]]


class Publisher:
    def __init__(
        self, celery_app: Celery, services: Services, *, batch_marks: bool = False
    ) -> None:
        self.app = celery_app
        self.services = services
        self._installed = False
        # batch_marks: rows sent after a commit are marked by a background thread, many
        # per UPDATE, instead of one extra transaction per request (the API's choice).
        self._batch_marks = batch_marks
        self._marks: list[int] = []
        self._marks_lock = threading.Lock()
        self._marks_due = threading.Event()
        self._marker: threading.Thread | None = None

    # --- sending ---------------------------------------------------------------

    def publish(self, task: str, args: dict[str, Any], countdown: float | None = None) -> str:
        """Send one task by name (to run no sooner than `countdown` seconds from now);
        its task id. Raises when the broker does not take it."""
        result = self.app.send_task(
            task,
            kwargs=dict(args),
            countdown=countdown,
            queue=queue_for(self.services.settings, task),
            retry=True,
            retry_policy=RETRY_POLICY,
            # A broker that stops answering (not refusing) must not hold the request:
            # the row stays pending for the beat's sweep.
            timeout=PUBLISH_TIMEOUT,
            confirm_timeout=PUBLISH_TIMEOUT,
        )
        return str(result.id)

    def _publish_rows(self, rows: list[Row]) -> list[int]:
        """Publish in order, stopping at the first failure; the ids that went out."""
        sent: list[int] = []
        for row_id, task, args in rows:
            try:
                self.publish(task, args)
            except Exception as exc:
                log.warning(
                    "publish of outbox row %d (%s) failed: %s; the beat will retry",
                    row_id,
                    task,
                    type(exc).__name__,
                )
                break
            sent.append(row_id)
        return sent

    def _mark(self, ids: list[int]) -> None:
        if not ids:
            return
        if not self._batch_marks:
            self._mark_now(ids)
            return
        with self._marks_lock:
            self._marks.extend(ids)
            if self._marker is None or not self._marker.is_alive():
                # Started on first use, so a forked gunicorn worker gets its own.
                self._marker = threading.Thread(
                    target=self._mark_in_background, name="outbox-marker", daemon=True
                )
                self._marker.start()
                # A process that exits writes what it still holds (else: sent again).
                atexit.register(self.flush_marks)
        self._marks_due.set()

    def _mark_in_background(self) -> None:
        while True:
            self._marks_due.wait()
            time.sleep(MARK_GATHER_SECONDS)  # let a batch gather
            self._marks_due.clear()
            self.flush_marks()

    def flush_marks(self) -> None:
        """Mark now what the background thread has not marked yet. A mark lost with
        the process only means the beat sends that row again, which tasks shrug off."""
        with self._marks_lock:
            ids, self._marks = self._marks, []
        for start in range(0, len(ids), FLUSH_BATCH):
            self._mark_now(ids[start : start + FLUSH_BATCH])

    def _mark_now(self, ids: list[int]) -> None:
        try:
            with self.services.unit_of_work() as uow:
                outbox.mark_published(uow.session, ids, utcnow())
        except SQLAlchemyError as exc:
            # Published but not marked: sent again later, which the tasks shrug off.
            log.warning("could not mark %d outbox rows published: %s", len(ids), type(exc).__name__)

    # --- after commit ----------------------------------------------------------

    def install(self) -> None:
        """Publish every unit of work's outbox rows right after it commits."""
        if self._installed:
            return
        self.services.after_commit.append(self._after_commit)
        self._installed = True

    def uninstall(self) -> None:
        self.flush_marks()
        if not self._installed:
            return
        self.services.after_commit.remove(self._after_commit)
        self._installed = False

    def _after_commit(self, done: Committed) -> None:
        # enqueue() put task and args in the unit of work with the id: nothing to read back.
        rows = [(queued.id, queued.task, queued.args) for queued in done.outbox]
        if rows:
            self._mark(self._publish_rows(rows))

    # --- the beat's sweep --------------------------------------------------------

    def flush_pending(self, older_than: datetime | None) -> int:
        """Publish rows left pending (created before `older_than`); the number sent.
        Stops at the first failed publish: the broker is down, try again next beat."""
        total = 0
        for _ in range(FLUSH_MAX_BATCHES):
            with self.services.unit_of_work() as uow:
                rows = [
                    (m.id, m.task, dict(m.args))
                    for m in outbox.pending(uow.session, older_than, limit=FLUSH_BATCH)
                ]
            if not rows:
                break
            sent = self._publish_rows(rows)
            self._mark_now(sent)
            total += len(sent)
            if len(sent) < len(rows) or len(rows) < FLUSH_BATCH:
                break
        return total

    # --- readiness ---------------------------------------------------------------

    def ping(self) -> bool:
        """True when the broker answers within about two seconds."""
        settings = self.services.settings
        if settings.embedded_broker:
            folder = settings.broker_folder / "queue"
            return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=PING_TIMEOUT)
        except Exception as exc:
            log.warning("broker ping failed: %s", type(exc).__name__)
            return False
        return True
