"""The webhook HTTP client: one POST, bounded in time and size, to a checked address.

The name is resolved once; every address it resolves to must be admitted
(domain.notify.webhook_addresses), and the connection goes to that checked
address, with the name kept for the Host header and TLS (SNI and certificate
check). A DNS answer that changes between the check and the connection therefore
cannot redirect it. The exchange itself is infra.http1: no redirect is followed
(only the status and Retry-After are read of an answer), at most 64 KiB of the
answer is read in all; the whole attempt gets 10 seconds, enforced by a watcher
thread that shuts the socket, so a receiver trickling bytes cannot hold it longer.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from domain.notify.webhook_addresses import AllowPrivate, admitted, literal_address
from domain.notify.webhook_delivery import Answer, Attempt
from infra import http1

TOTAL_SECONDS = 10.0
MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "mfa-backup-codes-webhooks/1"

# host, port -> the addresses it resolves to (tests give a stub: never real DNS there).
Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Refused(Exception):
    """The attempt was not made: the reason is safe to record (no URL, no secret)."""


class _Exchange:
    """One attempt's socket, where the deadline's watcher can find it to shut it (the
    TLS socket before its handshake, so a trickled handshake is cut off too)."""

    __slots__ = ("expired", "sock")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.expired = False  # set by the watcher before it shuts `sock`

    def hold(self, sock: socket.socket) -> None:
        """Make `sock` the one the watcher shuts; TimeoutError if the budget already
        ran out (the watcher fired before there was a socket, or between two)."""
        self.sock = sock
        if self.expired:  # read after the write: one of the two sees the other
            raise TimeoutError

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is true, and float() refuses it
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class WebhookClient:
    def __init__(
        self,
        allow: AllowPrivate,
        resolver: Resolver = system_resolver,
        *,
        total_seconds: float = TOTAL_SECONDS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.allow = allow
        self.resolver = resolver
        self.total_seconds = total_seconds
        self.tls = tls or ssl.create_default_context()
        self._deadlines = _Deadlines()

    def address_for(self, host: str, port: int) -> str:
        """The one address to connect to: every resolved address must be admitted."""
        literal = literal_address(host)
        if literal is not None:
            found: Sequence[str] = [literal]
        else:
            try:
                found = self.resolver(host, port)
            except (OSError, UnicodeError):
                raise Refused("the name does not resolve") from None
        if not found:
            raise Refused("the name does not resolve")
        if not all(admitted(a, self.allow) for a in found):
            raise Refused("the url resolves to an address that is not admitted")
        return found[0]

    def send(self, attempt: Attempt) -> Answer:
        """POST the attempt, signed now; the receiver's answer, or why there was none."""
        try:
            return self._send(attempt)
        except Refused as exc:
            return Answer(None, str(exc))

    def _send(self, attempt: Attempt) -> Answer:
        parts = urlsplit(attempt.url)
        https = parts.scheme == "https"
        if parts.scheme == "http" and self.allow == AllowPrivate.NONE:
            raise Refused("plain http is not admitted")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refused("the url is not valid")
        default_port = 443 if https else 80
        port = parts.port or default_port
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **attempt.headers(int(time.time())),  # a fresh timestamp at every attempt
        }
        host = parts.hostname
        try:
            wire = http1.request(
                "POST", http1.host_header(host, port, default_port), path, headers, attempt.body
            )
        except ValueError:
            raise Refused("the url is not valid") from None
        address = self.address_for(host, port)
        started = time.monotonic()
        exchange = _Exchange()
        # The whole attempt's budget: the socket is shut when it runs out.
        armed = self._deadlines.arm(self.total_seconds, exchange)
        try:
            sock = socket.create_connection((address, port), self.total_seconds)
            exchange.hold(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if https:  # the certificate checked against the name (and SNI for it)
                tls = self.tls.wrap_socket(
                    sock, server_hostname=host, do_handshake_on_connect=False
                )
                exchange.hold(tls)  # before the handshake: the watcher can cut it short
                tls.do_handshake()
                sock = tls
            sock.sendall(wire)
            # At most MAX_ANSWER_BYTES of the answer in all; the rest goes with the socket.
            status, answer_headers = http1.read_answer(sock, MAX_ANSWER_BYTES)
            retry_after = retry_after_seconds(answer_headers.get("retry-after"), time.time())
        except TimeoutError:
            return Answer(None, "timed out")
        except (OSError, http1.BadAnswer) as exc:
            if exchange.expired or time.monotonic() - started >= self.total_seconds:
                return Answer(None, "timed out")  # the watcher shut it (TLS says "EOF")
            if isinstance(exc, ssl.SSLError):
                return Answer(None, "tls failed")
            if isinstance(exc, ConnectionRefusedError):
                return Answer(None, "connection refused")
            return Answer(None, f"connection failed ({type(exc).__name__})")
        finally:
            self._deadlines.disarm(armed)
            exchange.close()
        error = None if 200 <= status < 300 else f"answered {status}"
        return Answer(status, error, retry_after)


class _Deadlines:
    """One thread that shuts each attempt's socket when its budget runs out (a timer
    thread started per attempt cost more than the rest of the attempt's own work)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []  # (deadline, token), soonest first
        self._live: dict[int, _Exchange] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, exchange: _Exchange) -> int:
        with self._cond:
            token = next(self._tokens)
            self._live[token] = exchange
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(
                    target=self._watch, name="webhook-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][1] == token:  # sooner than what the watcher waits for
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._live.pop(token, None)

    def _watch(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                _shut(self._live.pop(token))


def _shut(exchange: _Exchange) -> None:
    exchange.expired = True  # before reading `sock`: see _Exchange.hold
    sock = exchange.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing to stop
            # The plain socket's shutdown, also under TLS: the file descriptor itself
            # (SSLSocket's own would also drop its TLS state, under the thread using it).
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
