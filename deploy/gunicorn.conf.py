"""gunicorn settings for `mfa-codes serve` (copied to /app/gunicorn.conf.py in the image).

Every value can be tuned from the environment without rebuilding the image.
"""

from __future__ import annotations

import os

# The API's metrics on their own port, added up across the workers (MFA_API_METRICS_PORT).
from api.metrics_port import child_exit, when_ready

# In a container the API must listen on every interface for nginx (another container) to reach it.
bind = os.environ.get("MFA_BIND", "0.0.0.0:8000")


def _workers() -> int:
    raw = os.environ.get("MFA_WEB_CONCURRENCY", "").strip()
    if raw:
        return max(1, int(raw))
    # gunicorn's rule of thumb, capped: each worker holds its own database pool,
    # and argon2 (19 MiB a hash) is memory-bound, so more processes buy little.
    return min(2 * (os.cpu_count() or 1) + 1, 8)


workers = _workers()
# Threads keep an idle keep-alive connection from pinning a whole process. A client
# that trickles its request still holds a thread while it does: deployments put
# nginx in front (deploy/nginx.conf), which buffers whole requests first; `mfa-codes
# run` uses `--worker-class waitress` instead (api/waitress_worker.py).
worker_class = "gthread"
threads = 4

# Requests are short (intake only queues the work); anything slower is stuck.
timeout = 30
# On SIGTERM, in-flight requests get this long to finish (compose waits 10 s by default
# before SIGKILL; raise stop_grace_period with it).
graceful_timeout = 30
# Shorter than any load balancer's idle timeout, so the proxy never reuses a closed socket.
keepalive = 5

# Heartbeat files on a container's overlay filesystem can stall workers; use memory.
# (Only gunicorn's own per-worker heartbeat files go there, created with mkstemp.)
_SHM = "/dev/shm"  # noqa: S108
if os.path.isdir(_SHM):
    worker_tmp_dir = _SHM

# Logs to stdout/stderr, for the container runtime. The access log names the path
# without its query string (%(U)s, not %(r)s or %(q)s) and no request header, so
# that no bearer token or other secret can ever reach it; the request id ties a
# line to the audit trail. The path of a repudiation link holds its ticket: the
# logger class writes it redacted (api/access_log.py).
logger_class = "api.access_log.RedactingLogger"
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)s rid=%({x-request-id}o)s'
errorlog = "-"
loglevel = os.environ.get("MFA_LOG_LEVEL", "info").lower()

# X-Forwarded-* is trusted only from these addresses (the reverse proxy); the
# audit trail's source IP depends on it, so never "*" unless nothing else can connect.
forwarded_allow_ips = os.environ.get("MFA_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# No runtime control socket (gunicorn >= 25.1; older versions ignore the name): nobody
# manages workers from inside the container, and the app user's home is not writable.
control_socket_disable = True

# The longest request line gunicorn accepts (its own maximum); the API's longest
# URLs are audit queries with filters, well below it.
limit_request_line = 8190

__all__ = ["child_exit", "when_ready"]  # gunicorn server hooks, read by name
