"""Worker metrics: task durations by task and outcome, served on their own port.

A worker process has no HTTP server of its own, so `serve_metrics(port)` starts
prometheus_client's; the business counters (infra.metrics) are counted where
the transaction commits, which for regenerations is here.
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals
from prometheus_client import Histogram, start_http_server

from infra import metrics as domain_metrics

TASK_DURATION = Histogram(
    "mfa_task_duration_seconds",
    "Time a Celery task ran, by task name and state",
    ["task", "state"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
_started: dict[str, float] = {}


def _prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    began = _started.pop(task_id or "", None)
    if began is not None and task is not None:
        TASK_DURATION.labels(task.name, state or "UNKNOWN").observe(time.perf_counter() - began)


def connect() -> None:
    """Idempotent: Celery's signals keep one receiver per dispatch_uid."""
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="mfa-metrics-prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid="mfa-metrics-postrun")


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 (scraped from outside the container)
    start_http_server(port, addr=addr, registry=domain_metrics.registry())
