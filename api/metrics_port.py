"""The API's Prometheus metrics on their own port (MFA_API_METRICS_PORT), served by
the gunicorn master: what every worker process counted, added up.

The workers write their samples to PROMETHEUS_MULTIPROC_DIR (`mfa-codes serve`
sets one under MFA_VAR_DIR when none is given); the master reads them all at each
scrape, so a scrape no longer sees whichever worker it happened to reach. The
API port itself serves no metrics: they name routes and counts that are nobody's
business but the operator's.

gunicorn calls `when_ready` and `child_exit` from deploy/gunicorn.conf.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PORT_ENV = "MFA_API_METRICS_PORT"


def fresh_multiproc_dir(path: Path) -> Path:
    """An empty directory for this run's samples (a previous run's would add up too)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    return path


def _metrics_host(addresses: list[Any]) -> str:
    """The API's own interface: 0.0.0.0 in a container, 127.0.0.1 under `run`."""
    for address in addresses:
        if isinstance(address, tuple) and address[0]:
            return str(address[0])
    return "127.0.0.1"


def when_ready(server: Any) -> None:
    port = int(os.environ.get(PORT_ENV) or 0)
    if not port:
        return
    if not os.environ.get(MULTIPROC_ENV):
        server.log.warning("%s is set without %s: no metrics served", PORT_ENV, MULTIPROC_ENV)
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    host = _metrics_host(list(server.cfg.address))
    start_http_server(port, addr=host, registry=registry)
    server.log.info("API metrics on %s:%s/metrics", host, port)


def child_exit(server: Any, worker: Any) -> None:
    """A worker process gone: its live gauges no longer count (its counters do)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
