"""The delivery task: one webhook delivery per task, on the deliveries queue.

Thin: claim (one UPDATE), send through the webhook client (no transaction open
while the receiver thinks), record (one UPDATE; a 410's disabling is a
transaction of its own). Both UPDATEs run in autocommit on the connection the
delivery thread keeps between attempts (infra.db.KeptConnections: on PostgreSQL
the pool's checkout and checkin cost about a third of an attempt's CPU); it goes
back to the pool once the thread has been idle for half a second. A slow receiver
holds one delivery worker slot for at most the client's 10 seconds, never a
regeneration (its own queue) nor another webhook's delivery beyond that slot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery, Task

from domain.notify import webhook_delivery
from domain.outbox import TASK_DELIVER_WEBHOOK
from infra import metrics
from infra.db import KeptConnections, utcnow
from infra.services import Services
from infra.webhook_client import WebhookClient
from workers.publish import Publisher

log = logging.getLogger(__name__)

# A retry due sooner than this is published with a countdown now; later ones (and
# anything a lost message or a killed worker left) are found by the sweep.
COUNTDOWN_UP_TO_SECONDS = 60.0
# A pending delivery dispatched this long ago and still not done is dispatched again.
REDISPATCH_AFTER_SECONDS = webhook_delivery.LEASE_SECONDS


def register_delivery_tasks(
    celery_app: Celery,
    services: Services,
    publisher: Publisher,
    client: WebhookClient | None = None,
) -> Task[[int], str]:
    sender = client or WebhookClient(services.settings.webhook_allow_private)
    connections = KeptConnections.for_engine(services.engine)

    @celery_app.task(name=TASK_DELIVER_WEBHOOK, shared=False, bind=True)
    def deliver(self: Task[Any, Any], delivery_id: int) -> str:
        if not isinstance(delivery_id, int) or isinstance(delivery_id, bool):
            log.warning("webhook.deliver: ignored a message without an integer id")
            return "invalid"
        recorded = deliver_once(services, sender, delivery_id, connections)
        if recorded is None:
            return "skipped"  # done, dead, paused, not due, or another worker has it
        wait = recorded.retry_in
        if wait is not None and wait <= COUNTDOWN_UP_TO_SECONDS:
            try:
                publisher.publish(TASK_DELIVER_WEBHOOK, {"delivery_id": delivery_id}, wait)
            except Exception as exc:  # the sweep sends it when due
                log.warning("could not schedule delivery %d: %s", delivery_id, type(exc).__name__)
        return recorded.outcome

    return deliver


def deliver_once(
    services: Services,
    sender: WebhookClient,
    delivery_id: int,
    connections: KeptConnections | None = None,
) -> webhook_delivery.Recorded | None:
    """One attempt of one delivery (what the task does); None when nothing was due.
    Without `connections`, each UPDATE checks out a connection of its own."""
    connections = connections or KeptConnections(services.engine, 0)
    # Autocommit: the claim and the record are one atomic UPDATE each, so a BEGIN and
    # a COMMIT round trip would add nothing (and on PostgreSQL each skips the WAL
    # flush: see webhook_delivery).
    with connections.connection() as conn:
        attempt = webhook_delivery.claim_in(conn, services.box, delivery_id, utcnow())
    if attempt is None:
        return None
    answer = sender.send(attempt)
    schedule = services.settings.webhook_retry_schedule
    if answer.status == webhook_delivery.GONE:  # disables the webhook: a transaction
        with services.unit_of_work() as uow:
            recorded = webhook_delivery.record(uow, attempt, answer, utcnow(), schedule)
    else:
        with connections.connection() as conn:
            recorded = webhook_delivery.record_in(conn, attempt, answer, utcnow(), schedule)
    metrics.WEBHOOK_DELIVERIES.labels(recorded.outcome).inc()
    log.info(
        "webhook delivery %d attempt %d: %s (%s)",
        delivery_id,
        attempt.number,
        recorded.outcome,
        answer.status if answer.status is not None else answer.error,
    )
    return recorded


def republish_due(services: Services, publisher: Publisher) -> int:
    """The sweep's part for deliveries: publish the due ones nobody is working on."""
    now = utcnow()
    with services.unit_of_work() as uow:
        due = webhook_delivery.due_deliveries(uow, now, REDISPATCH_AFTER_SECONDS)
    return publish_each(publisher, TASK_DELIVER_WEBHOOK, "delivery_id", due)


def publish_each(publisher: Publisher, task: str, key: str, ids: Iterable[object]) -> int:
    """Publish `task` once for each id (as its `key` argument), stopping at the first
    failure: the rows stay due, so the next sweep tries them again. How many went."""
    sent = 0
    for row_id in ids:
        try:
            publisher.publish(task, {key: row_id})
        except Exception as exc:
            log.warning("republish of %s stopped: %s", task, type(exc).__name__)
            break
        sent += 1
    return sent
