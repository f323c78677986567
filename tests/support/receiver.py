"""A real HTTP receiver on 127.0.0.1 for the webhook tests: a thread serving what
each test scripts (status, headers, a pause or a hang) and recording every request
it got, so a test verifies the signatures with the standardwebhooks library."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    pause: float = 0.0  # seconds before answering
    hang: bool = False  # never answer (until the receiver stops)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


@dataclass
class Receiver:
    port: int = 0
    # Replies in order; the last one repeats.
    replies: list[Reply] = field(default_factory=lambda: [Reply()])
    received: list[Received] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.replies = list(replies)

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def _next(self, got: Received) -> Reply:
        with self.lock:
            self.received.append(got)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@contextmanager
def receiver(*replies: Reply, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """With `tls` (a server context), the receiver speaks HTTPS."""
    state = Receiver(replies=list(replies) or [Reply()])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            got = Received(
                self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
            )
            reply = state._next(got)
            if reply.hang:
                state.stopping.wait(60)
                return
            if reply.pause:
                time.sleep(reply.pause)
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            del format, args  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()
