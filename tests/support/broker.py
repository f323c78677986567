"""Cleaning up after a test's broker queues."""

from __future__ import annotations

from celery import Celery


def delete_broker_queues(celery_app: Celery) -> None:
    """Remove an app's queues and exchanges (and what no worker consumed) from the broker."""
    with celery_app.connection_for_write() as conn:
        for queue in celery_app.amqp.queues.values():
            bound = queue.bind(conn.default_channel)
            bound.delete()
            bound.exchange.delete()
