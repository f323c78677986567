"""The Celery app and its configuration: late acks, explicit queues, no results.

`make_celery(settings)` builds a fresh app with no side effect beyond creating
the embedded broker's folders; nothing happens at import. The database holds
every status, so there is no result backend.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu import Exchange, Queue

from domain.notify.mail import TASK_SEND_MAIL as TASK_SEND_MAIL
from domain.outbox import DELIVERIES_QUEUE, DELIVERY_TASKS, TASK_PROCESS_REGENERATION
from infra.settings import Settings
from workers import folder_broker

TASK_PROCESS = TASK_PROCESS_REGENERATION  # named by the domain, which writes it to the outbox
TASK_REPUBLISH_STALE = "maintenance.republish_stale"
TASK_EXPIRE_SHEETS = "maintenance.expire_sheets"
TASK_CHECKPOINT = "audit.checkpoint"
TASK_PURGE = "maintenance.purge"

# A regeneration is a few argon2 hashes, a PDF and one transaction: well under a
# second. The soft limit leaves time to roll back; the hard one kills a stuck child.
SOFT_TIME_LIMIT = 60
TIME_LIMIT = 90
# The redis transport redelivers an unacked message after this long; it must be far
# above the longest task or a slow task would run twice concurrently.
REDIS_VISIBILITY_TIMEOUT = 3600
REDIS_SOCKET_TIMEOUT = 2.0
# The embedded broker polls its folder when idle; 0.1 s keeps a request's latency low
# at the cost of a directory listing per queue ten times a second.
FILESYSTEM_POLLING_INTERVAL = 0.1


def regeneration_queue(settings: Settings) -> str:
    return f"{settings.queue_prefix}.regeneration"


def maintenance_queue(settings: Settings) -> str:
    return f"{settings.queue_prefix}.maintenance"


def deliveries_queue(settings: Settings) -> str:
    """Mails and webhooks: their own queue and worker, so a slow receiver never holds a
    regeneration."""
    return f"{settings.queue_prefix}.{DELIVERIES_QUEUE}"


def queue_for(settings: Settings, task: str) -> str:
    if task == TASK_PROCESS:
        return regeneration_queue(settings)
    if task in DELIVERY_TASKS:
        return deliveries_queue(settings)
    return maintenance_queue(settings)


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    url = settings.broker_url
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        # A publish returns only once RabbitMQ has taken the message.
        return {"confirm_publish": True}
    if url.startswith(("redis://", "rediss://")):
        # The redis transport ignores broker_connection_timeout and publish timeouts:
        # without socket timeouts a silent Redis would hold a request indefinitely.
        return {
            "visibility_timeout": REDIS_VISIBILITY_TIMEOUT,
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
        }
    if settings.embedded_broker:
        # Measured here (`mfa-codes` worker, threads pool, 200 no-op tasks): ~1,000
        # tasks/s, against ~100/s for kombu's SQLAlchemy transport on SQLite, which also
        # never deletes acked rows. Both lose a message held by a killed worker; the
        # outbox and the stale republish make that a delay, never a loss.
        folder = settings.broker_folder
        queue_dir = folder / "queue"
        control = folder / "control"
        claimed = folder / "claimed"
        quarantine = folder / "quarantine"
        for path in (queue_dir, control, claimed, quarantine):
            path.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control),  # else kombu writes ./control in the cwd
            # A consumer takes a message by renaming it here: the same file system as
            # the queue, so exactly one consumer wins (see workers/folder_broker.py).
            "claim_folder": str(claimed),
            "quarantine_folder": str(quarantine),
            "store_processed": False,
            "polling_interval": FILESYSTEM_POLLING_INTERVAL,
        }
    return {}


def broker_url(settings: Settings) -> str:
    url = settings.broker_url
    if settings.embedded_broker and not urlsplit(url).hostname:
        # The folder transport ignores the host, but kombu warns on every connection
        # of a URL without one.
        return "filesystem://localhost//"
    return url


def make_celery(settings: Settings) -> Celery:
    app = Celery(f"mfa-{settings.queue_prefix}", set_as_current=False)
    regeneration = regeneration_queue(settings)
    maintenance = maintenance_queue(settings)
    deliveries = deliveries_queue(settings)
    app.conf.update(
        broker_url=broker_url(settings),
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        # Also bounds how long an unreachable broker can hold up a publish.
        broker_connection_timeout=2,
        # Ids and JSON primitives only: no pickle, ever.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        # The database holds the status: no result backend.
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        # A message is acknowledged after its task ran, and given back when the worker
        # dies mid-task: every task is idempotent, so a second run changes nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # On a lost broker connection the broker gives the unacked message back anyway;
        # cancelling the task running it (Celery 6's default) avoids two runs at once.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_soft_time_limit=SOFT_TIME_LIMIT,
        task_time_limit=TIME_LIMIT,
        task_queues=(
            Queue(regeneration, Exchange(regeneration, type="direct"), routing_key=regeneration),
            Queue(maintenance, Exchange(maintenance, type="direct"), routing_key=maintenance),
            Queue(deliveries, Exchange(deliveries, type="direct"), routing_key=deliveries),
        ),
        task_default_queue=maintenance,
        task_default_exchange=maintenance,
        task_default_routing_key=maintenance,
        task_routes={
            TASK_PROCESS: {"queue": regeneration, "routing_key": regeneration},
            **{task: {"queue": deliveries, "routing_key": deliveries} for task in DELIVERY_TASKS},
            "maintenance.*": {"queue": maintenance, "routing_key": maintenance},
            "audit.*": {"queue": maintenance, "routing_key": maintenance},
        },
        task_create_missing_queues=False,
        # Our logging (infra.logs) stays in charge of the root logger.
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        beat_schedule_filename=str(settings.var_dir / "celerybeat-schedule"),
        timezone="UTC",
        enable_utc=True,
    )
    if settings.embedded_broker:
        # kombu's folder transport with atomic publishes and claims, and a consumer that
        # quarantines an undecodable file instead of stopping the worker.
        app.conf.broker_transport = folder_broker.TRANSPORT_PATH
        # Broadcast (remote control, gossip, mingle) would leave a queue per dead worker
        # in the folder broker, filling it with messages nobody reads.
        app.conf.worker_enable_remote_control = False
    return app
