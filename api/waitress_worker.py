"""A gunicorn worker that serves its sockets with waitress (`mfa-codes run`'s API).

gunicorn's gthread worker gives a connection a thread as soon as its first byte
arrives, and the thread then reads the request synchronously: 8 clients that send
a header byte every few seconds hold 8 threads, and nothing else is answered.
waitress reads every request (headers and body) in its event loop and hands a
thread only a complete request, so a slow client costs a socket, not a thread;
and a request not complete within REQUEST_DEADLINE of its first byte is dropped,
so slow clients do not pile up to the connection limit either (as nginx does
with client_header_timeout in deploy/nginx.conf).
gunicorn stays the process manager: several processes, restarts, graceful stops,
the heartbeat that catches a stuck process.

Deployments run gthread behind nginx, which buffers requests the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from gunicorn.workers.base import Worker
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

# Open connections per process before waitress stops accepting (slow or idle ones
# included). Each costs a file descriptor; poll() has no FD_SETSIZE limit.
CONNECTION_LIMIT = 512
# Larger than the API's own body limits, so the API answers its own 413; still bounded.
MAX_REQUEST_BODY = 4 * 1024 * 1024
MAX_REQUEST_HEADERS = 64 * 1024
LOOP_SECONDS = 1.0
# From a request's first byte to its last (headers and a body of at most 64 KiB).
REQUEST_DEADLINE = 10.0


class WaitressWorker(Worker):  # gunicorn ships no types: its Worker is Any (pyproject)
    def run(self) -> None:
        socket_map: dict[int, Any] = {}
        server = create_server(
            self._access_logged(self.wsgi),
            map=socket_map,
            sockets=[listener.sock for listener in self.sockets],
            threads=self.cfg.threads,
            connection_limit=CONNECTION_LIMIT,
            # An idle connection (no request in progress) is closed after this.
            channel_timeout=max(1, int(self.cfg.timeout)),
            cleanup_interval=max(1, int(self.cfg.keepalive)),
            max_request_body_size=MAX_REQUEST_BODY,
            max_request_header_size=MAX_REQUEST_HEADERS,
            asyncore_use_poll=True,
            # X-Forwarded-* stay for the API to judge (MFA_TRUSTED_PROXIES).
            clear_untrusted_proxy_headers=False,
            expose_tracebacks=False,
            ident="mfa-backup-codes",
        )
        for dispatcher in list(socket_map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = DeadlineChannel
        try:
            while self.alive:
                self.notify()  # the arbiter's heartbeat: a stuck loop gets killed
                wasyncore.loop(timeout=LOOP_SECONDS, map=socket_map, use_poll=True, count=1)
                if dropped := drop_late_requests(socket_map, time.monotonic()):
                    self.log.info(
                        "closed %d connections: request not complete after %.0f s",
                        dropped,
                        REQUEST_DEADLINE,
                    )
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
            self._drain(socket_map)
        finally:
            server.task_dispatcher.shutdown(timeout=5)
            wasyncore.close_all(socket_map)

    def _drain(self, socket_map: dict[int, Any]) -> None:
        """A graceful stop: no new connections; requests in progress get up to
        graceful_timeout to be answered."""
        for dispatcher in list(socket_map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.accepting = False
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline and any(
            isinstance(ch, HTTPChannel) and (ch.requests or ch.total_outbufs_len)
            for ch in list(socket_map.values())
        ):
            self.notify()
            wasyncore.loop(timeout=0.1, map=socket_map, use_poll=True, count=1)

    def _access_logged(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
        """The access log line gunicorn's own workers write, in its configured format."""
        log = self.log

        def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if not log.access_log_enabled:
                return app(environ, start_response)
            exchange = _Exchange(time.monotonic())

            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                exchange.status, exchange.headers = status, headers
                return start_response(status, headers, exc_info)

            # No RAW_URI (gunicorn's, with the query string) under waitress: the path only.
            environ.setdefault("RAW_URI", environ.get("PATH_INFO", ""))
            return _Logged(
                app(environ, start),
                exchange,
                lambda: log.access(
                    exchange, [], environ, timedelta(seconds=time.monotonic() - exchange.began)
                ),
            )

        return logged


class DeadlineChannel(HTTPChannel):
    """Remembers when the request being read began."""

    request_began = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_began = time.monotonic()
        return bool(super().received(data))


def drop_late_requests(socket_map: dict[int, Any], now: float) -> int:
    """Close the connections whose request is still incomplete past the deadline;
    the event loop closes them on its next turn. How many."""
    late = [
        ch
        for ch in list(socket_map.values())
        if isinstance(ch, DeadlineChannel)
        and ch.request is not None
        and not ch.requests
        and not ch.will_close
        and now - ch.request_began > REQUEST_DEADLINE
    ]
    for channel in late:
        channel.will_close = True
    return len(late)


class _Exchange:
    """What gunicorn's access logger reads from a response."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.sent = 0


class _Logged:
    """The application's body, counted; the log line written when waitress closes it."""

    def __init__(self, body: Iterable[bytes], exchange: _Exchange, done: Callable[[], None]):
        self._body = body
        self._exchange = exchange
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._exchange.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done()
