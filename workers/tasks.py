"""Thin tasks: take an id, open a unit of work, call the domain.

`register_tasks(celery_app, services, publisher)` binds them to one Services, so a
test can run a real worker on its own database. Every task is idempotent; arguments are
ids only, and nothing but the id is ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from domain import purge, regeneration, throttles
from domain.audit.checkpoints import moved_heads, sign_if_moved
from domain.notify import mail
from infra import logs
from infra.db import utcnow
from infra.mail import MailTransport, transport_for
from infra.services import Services
from infra.webhook_client import WebhookClient
from workers import mail as mail_jobs
from workers.app import (
    TASK_CHECKPOINT,
    TASK_EXPIRE_SHEETS,
    TASK_PROCESS,
    TASK_PURGE,
    TASK_REPUBLISH_STALE,
    TASK_SEND_MAIL,
)
from workers.deliveries import publish_each, register_delivery_tasks, republish_due
from workers.publish import Publisher

log = logging.getLogger(__name__)

MAX_RETRIES = 4  # 1 + 2 + 4 + 8 s; after that the stale republish still catches it
RETRY_BACKOFF_SECONDS = 1.0  # the first retry's wait; each next one waits twice as long
# Outbox rows younger than this are left to the after-commit publisher at work now.
OUTBOX_GRACE_SECONDS = 5


class TransientDatabaseError(Exception):
    """What a retry records instead of the driver's exception, whose text may carry
    SQL parameters."""


@dataclass
class RegisteredTasks:
    process: Task[[str], str]
    republish_stale: Task[[], dict[str, int]]
    expire_sheets: Task[[], int]
    checkpoint: Task[[], int]
    purge: Task[[], dict[str, int]]
    send_mail: Task[[str], str]
    deliver_webhook: Task[[int], str]


@contextmanager
def _task_id(task: Task[Any, Any]) -> Iterator[None]:
    """Puts the task id on every log line the task writes (infra.logs)."""
    token = logs.task_id_var.set(getattr(task.request, "id", None))
    try:
        yield
    finally:
        logs.task_id_var.reset(token)


def _db_error(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__


def register_tasks(
    celery_app: Celery,
    services: Services,
    publisher: Publisher | None = None,
    *,
    transport: MailTransport | None = None,
    webhook_client: WebhookClient | None = None,
) -> RegisteredTasks:
    publisher = publisher or Publisher(celery_app, services)
    settings = services.settings
    mailer = transport or transport_for(settings)
    deliver_webhook = register_delivery_tasks(celery_app, services, publisher, webhook_client)

    @celery_app.task(name=TASK_PROCESS, shared=False, bind=True, max_retries=MAX_RETRIES)
    def process(self: Task[Any, Any], regeneration_id: str) -> str:
        with _task_id(self):
            if not isinstance(regeneration_id, str):
                log.warning("regeneration.process: ignored a message without a string id")
                return "invalid"
            try:
                with services.unit_of_work() as uow:
                    started = regeneration.mark_started(uow, regeneration_id, utcnow())
                with services.unit_of_work() as uow:
                    status = regeneration.process_regeneration(
                        uow, services, regeneration_id, utcnow()
                    )
            except OperationalError as exc:
                retries = int(self.request.retries or 0)
                log.warning(
                    "regeneration %s: transient database error %s, retry %d",
                    regeneration_id,
                    _db_error(exc),
                    retries + 1,
                )
                raise self.retry(
                    countdown=RETRY_BACKOFF_SECONDS * 2**retries,
                    exc=TransientDatabaseError(_db_error(exc)),
                ) from None
            except Exception as exc:
                # An error that may well repeat (bad data, a bug): a few retries, then
                # the request is failed, so it does not come back every sweep forever.
                kind = _db_error(exc) if isinstance(exc, SQLAlchemyError) else type(exc).__name__
                retries = int(self.request.retries or 0)
                if retries < MAX_RETRIES:
                    log.error("regeneration %s: %s, retry %d", regeneration_id, kind, retries + 1)
                    # Re-raised without the message: a statement's parameters stay out.
                    raise self.retry(
                        countdown=RETRY_BACKOFF_SECONDS * 2**retries, exc=RuntimeError(kind)
                    ) from None
                log.error("regeneration %s: %s on every try: failed", regeneration_id, kind)
                with services.unit_of_work() as uow:
                    regeneration.abandon(uow, regeneration_id, utcnow())
                return regeneration.PROCESSING_FAILED
            log.info("regeneration %s: %s", regeneration_id, status, extra={"started": started})
            return status

    @celery_app.task(name=TASK_REPUBLISH_STALE, shared=False, bind=True)
    def republish_stale(self: Task[Any, Any]) -> dict[str, int]:
        with _task_id(self):
            now = utcnow()
            outbox = publisher.flush_pending(now - timedelta(seconds=OUTBOX_GRACE_SECONDS))
            with services.unit_of_work() as uow:
                stale = regeneration.stale_regenerations(
                    uow.session, now, settings.stale_after_seconds
                )
            sent = 0
            for regeneration_id in stale:
                try:
                    publisher.publish(TASK_PROCESS, {"regeneration_id": regeneration_id})
                except Exception as exc:
                    # Their dispatched_at was bumped: the next sweep after
                    # stale_after_seconds tries them again. The type only: the text
                    # may name the broker's URL.
                    log.warning("republish of stale regenerations stopped: %s", type(exc).__name__)
                    break
                sent += 1
            deliveries = republish_due(services, publisher)
            mails = _republish_due_mails(publisher, services, now)
            if outbox or sent or deliveries or mails:
                log.info(
                    "republished %d outbox messages, %d stale regenerations, %d due"
                    " deliveries and %d mails",
                    outbox,
                    sent,
                    deliveries,
                    mails,
                )
            return {"outbox": outbox, "stale": sent, "deliveries": deliveries, "mails": mails}

    @celery_app.task(name=TASK_SEND_MAIL, shared=False, bind=True)
    def send_mail(self: Task[Any, Any], mail_id: str) -> str:
        with _task_id(self):
            if not isinstance(mail_id, str):
                log.warning("mail.send: ignored a message without a string id")
                return "invalid"
            return mail_jobs.send_one(services, mailer, mail_id)

    @celery_app.task(name=TASK_EXPIRE_SHEETS, shared=False, bind=True)
    def expire_sheets(self: Task[Any, Any]) -> int:
        with _task_id(self):
            with services.unit_of_work() as uow:
                expired = regeneration.expire_sheets(uow, utcnow())
            if expired:
                log.info("expired %d unfetched sheets", expired)
            # The same sweep ends the throttle windows of sources not seen again.
            with services.unit_of_work() as uow:
                throttles.purge(uow.session)
            return expired

    @celery_app.task(name=TASK_CHECKPOINT, shared=False, bind=True)
    def checkpoint(self: Task[Any, Any]) -> int:
        with _task_id(self):
            with services.unit_of_work() as uow:
                orgs = moved_heads(uow.session)
            written = 0
            now = utcnow()
            # One transaction per organization: a head stays locked only while it is signed.
            for org_id in orgs:
                with services.unit_of_work() as uow:
                    written += sign_if_moved(uow, settings, org_id, now) is not None
            if written:
                log.info("signed %d audit checkpoints", written)
            return written

    @celery_app.task(name=TASK_PURGE, shared=False, bind=True)
    def purge_old_rows(self: Task[Any, Any]) -> dict[str, int]:
        with _task_id(self):
            counts = purge.purge(services, utcnow())
            if counts["outbox"] or counts["regenerations"] or counts["auth_failures"]:
                log.info(
                    "purged %d published outbox rows, %d finished regenerations and "
                    "%d failure rows in %d batches",
                    counts["outbox"],
                    counts["regenerations"],
                    counts["auth_failures"],
                    counts["batches"],
                )
            return counts

    return RegisteredTasks(
        process,
        republish_stale,
        expire_sheets,
        checkpoint,
        purge_old_rows,
        send_mail,
        deliver_webhook,
    )


def _republish_due_mails(publisher: Publisher, services: Services, now: datetime) -> int:
    """Mails whose retry is due, or whose attempt was lost with its worker."""
    with services.unit_of_work() as uow:
        due = mail.due(uow, now)
    # A row left unpublished is put off by mail.REPUBLISH_WAIT: a later sweep tries again.
    return publish_each(publisher, TASK_SEND_MAIL, "mail_id", due)
