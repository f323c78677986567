"""The per-request HTTP metrics. They are served on a port of their own
(api/metrics_port.py, MFA_API_METRICS_PORT), not on the API's.

Requests are labelled by route template (`/v1/me/backup-codes/regenerations/{regeneration_id}`),
never by the concrete path, so no user id or regeneration id becomes a label.
"""

from __future__ import annotations

import time
from typing import Any

import falcon
from falcon.constants import COMBINED_METHODS
from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "mfa_http_requests",
    "HTTP requests answered, by route, method and status",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "mfa_http_request_duration_seconds",
    "Time to answer an HTTP request, by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class HttpMetrics:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        route = req.uri_template or "unmatched"
        status = str(resp.status_code)
        # Only known methods: a label per invented method would grow without bound.
        method = req.method if req.method in COMBINED_METHODS else "other"
        HTTP_REQUESTS.labels(route, method, status).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            HTTP_DURATION.labels(route).observe(time.perf_counter() - started)
