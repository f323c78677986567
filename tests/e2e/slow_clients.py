"""Slow clients (a "slowloris"): sockets that send a request header one byte every
few seconds and never finish it, and `/healthz` probes sent meanwhile.

Shared by the slow-client tests and `bench/bench_slow_clients.py`. Every loop is
bounded in count and time, and traffic goes only to the address given (127.0.0.1).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# A header that never ends: after the prefix, one more padding byte per round.
PREFIX = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
PROBE_TIMEOUT = 5.0


@dataclass
class SlowSockets:
    """What the held sockets did: how many connected, rounds sent, how many the
    server closed on them (a server may drop slow readers; that is fine)."""

    opened: int = 0
    rounds: int = 0
    closed_by_server: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def _trickle(socks: list[socket.socket], state: SlowSockets, interval: float, hold: float) -> None:
    rounds = int(hold / interval) + 1
    live = list(socks)
    for i in range(rounds):
        byte = PREFIX[i : i + 1] or b"a"
        for sock in list(live):
            try:
                sock.send(byte)
            except OSError:
                live.remove(sock)
                state.closed_by_server += 1
        state.rounds = i + 1
        if state.stop.wait(interval):
            return


@contextlib.contextmanager
def slow_sockets(
    host: str, port: int, count: int = 64, interval: float = 2.0, hold: float = 20.0
) -> Iterator[SlowSockets]:
    """`count` sockets connected and trickling a header byte every `interval` seconds
    for at most `hold` seconds (from a bounded loop in one thread); closed on exit."""
    state = SlowSockets()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=5)
            sock.settimeout(1.0)
            socks.append(sock)
            state.opened += 1
        thread = threading.Thread(target=_trickle, args=(socks, state, interval, hold), daemon=True)
        thread.start()
        # The first byte is out on every socket: each now holds whatever the server
        # gave it (a thread, with a server that reads synchronously).
        deadline = time.monotonic() + 10
        while state.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield state
        finally:
            state.stop.set()
            thread.join(timeout=interval + 5)
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Probe:
    status: int | None  # None: no answer within the timeout (or the connection failed)
    seconds: float
    error: str = ""


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> Probe:
    """One GET /healthz on a new connection."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        return Probe(resp.status, time.perf_counter() - began)
    except OSError as exc:
        return Probe(None, time.perf_counter() - began, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def probes(host: str, port: int, count: int, within: float, spacing: float) -> list[Probe]:
    """Up to `count` probes, one every `spacing` seconds at most, stopping after `within`."""
    out: list[Probe] = []
    end = time.monotonic() + within
    for _ in range(count):
        if time.monotonic() >= end:
            break
        began = time.monotonic()
        out.append(probe(host, port))
        pause = spacing - (time.monotonic() - began)
        if pause > 0:
            time.sleep(pause)
    return out


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
