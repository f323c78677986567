"""A small threaded TCP proxy that fault tests put between the service and a real
server (PostgreSQL, RabbitMQ), to cut the link and give it back.

- `cut()` stops listening (new connections are refused: ECONNREFUSED, as when the
  server is down) and resets every live connection on both sides (the client sees
  ECONNRESET, the server sees its client vanish and rolls back what was open).
- `restore()` listens again on the same port.
- `drop_live()` resets the live connections only; new ones still go through.
- `pause()` / `resume()` stop forwarding bytes without closing anything: a silent
  partition, where only timeouts can tell.

Two threads per connection, one per direction; a few dozen connections at most.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

BUFFER = 64 * 1024
ACCEPT_POLL_SECONDS = 0.1


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), so the peer learns at once instead of at its timeout."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self._closed = threading.Event()

    def start(self) -> None:
        for src, dst in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                self.proxy._forwarding.wait()
                data = src.recv(BUFFER)
                if not data:
                    break
                self.proxy._forwarding.wait()
                if self._closed.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        # One side finished or failed: end both, as a real connection would.
        self.close(reset=False)

    def close(self, *, reset: bool) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in (self.client, self.upstream):
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        self.proxy._forget(self)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.connections_made = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._stopped = False

    # --- life cycle ----------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def close(self) -> None:
        self._stopped = True
        self._forwarding.set()  # let paused pumps notice the end
        self._stop_listening()
        self.drop_live()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faults --------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def cut(self) -> None:
        """The server is gone: refuse new connections, reset the live ones."""
        self._stop_listening()
        self.drop_live()

    def restore(self) -> None:
        self._forwarding.set()
        if self._listener is None:
            self._listen()

    def drop_live(self) -> int:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close(reset=True)
        return len(links)

    def pause(self) -> None:
        self._forwarding.clear()

    def resume(self) -> None:
        self._forwarding.set()

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._links)

    # --- helpers ---------------------------------------------------------------

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@" if userinfo else ""
        netloc += f"{self.listen_host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @classmethod
    @contextlib.contextmanager
    def in_front_of(cls, url: str, default_port: int) -> Iterator[TcpProxy]:
        parts = urlsplit(url)
        with cls(parts.hostname or "127.0.0.1", parts.port or default_port) as proxy:
            yield proxy

    # --- internals -------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.listen_host, self.port))  # port 0 the first time, then the same
        listener.listen(64)
        listener.settimeout(ACCEPT_POLL_SECONDS)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True)
        self._accepting.start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            listener.close()
        if self._accepting is not None:
            self._accepting.join(timeout=2)
            self._accepting = None

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener and not self._stopped:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._listener is not listener:  # cut while this one was arriving
                _reset(client)
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, upstream)
            with self._lock:
                self.connections_made += 1
                self._links.add(link)
            link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
