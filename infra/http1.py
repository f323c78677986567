"""One HTTP/1.1 exchange on a connected socket, as lean as the webhook client needs.

The request is written in one piece; of the answer, the status line and the
headers are read within a byte budget, and a body announced by Content-Length is
read (and dropped) within what is left of it; the caller closes the socket after.
http.client, which did this before, validates each request header on its own and
parses every answer's headers with the email package. Measured on a local receiver,
one thread: a bare POST through http.client took 355-370 us of CPU, the same bytes
on a bare socket 170 us, and the client's send had been 433-535 us of an attempt's
930-1,250 us (280 us of 840 us with this module). What a webhook attempt needs of
an answer is its status and one header (Retry-After); the rest is split into names
and values and never interpreted.

Strict where it matters: a request target, header name or value that could split
the request (control characters, spaces, non-ASCII in the target) is refused
before anything is sent (ValueError), and an answer that is not HTTP/1.x, has more
than MAX_HEADERS headers or does not end its head within the budget raises
BadAnswer. Lenient where a receiver's sloppiness must not cost its answer: a header
line that is not `name: value` is skipped (its status stands), and a body that
cannot be read to its end is dropped with the connection. Interim answers (100,
102, 103 and the rest of 1xx but 101, which is final) are read past.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Mapping

MAX_HEADERS = 100  # as http.client

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field names
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")  # no control characters but tab
_TARGET = re.compile(r"[!-~]+")  # visible ASCII: no space, no control character
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?:[ \t][^\r\n]*)?")
_LINE_BREAK = re.compile(rb"\r?\n")
_NO_BODY = frozenset({204, 304})


class BadAnswer(Exception):
    """The receiver's answer is not an HTTP/1.x answer we can read within the budget."""


def host_header(host: str, port: int, default_port: int) -> str:
    """The Host field: the name (IPv6 literals bracketed, IDNs as A-labels), with the
    port unless it is the scheme's default."""
    try:
        name = host.encode("ascii").decode()
    except UnicodeEncodeError:
        name = host.encode("idna").decode()
    if ":" in name:
        name = f"[{name}]"
    return name if port == default_port else f"{name}:{port}"


def request(method: str, host: str, target: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request's bytes, with Host, Content-Length and Connection: close (one
    exchange a connection). ValueError for anything that could split it."""
    if not _TARGET.fullmatch(target) or not _TOKEN.fullmatch(method):
        raise ValueError("the request target is not valid")
    fields = {"Host": host, **headers, "Content-Length": str(len(body)), "Connection": "close"}
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in fields.items():
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise ValueError("a request header is not valid")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1") + body
    except UnicodeEncodeError:
        raise ValueError("a request header is not valid") from None


def read_answer(sock: socket.socket, budget: int) -> tuple[int, dict[str, str]]:
    """The final answer's status and headers (names lower-cased; of a repeated one,
    the last), reading at most `budget` bytes in all, its body included."""
    buffer = b""
    taken = 0  # bytes received so far, interim answers included
    searched = 0
    while True:
        end = _HEAD_END.search(buffer, max(0, searched - 3))
        if end is None:
            searched = len(buffer)
            if taken >= budget:
                raise BadAnswer("the answer's head is larger than the budget")
            chunk = sock.recv(budget - taken)
            if not chunk:
                raise BadAnswer("the connection closed before the answer's head ended")
            taken += len(chunk)
            buffer += chunk
            continue
        status, headers = _parse_head(buffer[: end.start()])
        buffer, searched = buffer[end.end() :], 0
        if 100 <= status < 200 and status != 101:
            continue  # interim (100 Continue, 103 Early Hints): the final one follows
        # The status is known: a body that fails to arrive (a reset, a TLS alert, the
        # deadline's shutdown) is dropped with the connection, not the answer with it.
        with contextlib.suppress(OSError):
            _drop_body(sock, status, headers, len(buffer), budget - taken)
        return status, headers


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = _LINE_BREAK.split(head)
    matched = _STATUS_LINE.fullmatch(status_line)
    if matched is None:
        raise BadAnswer("the answer's status line is not HTTP/1.x")
    if len(lines) > MAX_HEADERS:
        raise BadAnswer("the answer has too many headers")
    headers: dict[str, str] = {}
    name = ""
    for raw in lines:
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and name:  # an obsolete folded continuation
            headers[name] = f"{headers[name]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")  # "Retry-After : 5", which some servers send
        if not colon or not _TOKEN.fullmatch(name):
            name = ""  # not a header: skipped, and nothing folds into it
            continue
        name = name.lower()
        headers[name] = value.strip(" \t")
    return int(matched.group(1)), headers


def _drop_body(
    sock: socket.socket, status: int, headers: Mapping[str, str], have: int, budget: int
) -> None:
    """Read what Content-Length announces (up to the budget) and drop it, so that the
    receiver sees its answer taken; without a length the body is left unread."""
    length = headers.get("content-length", "")
    # ASCII digits only ("²".isdigit() is true), and few enough for int() to take.
    if status in _NO_BODY or not (length.isascii() and length.isdigit()) or len(length) > 18:
        return
    left = min(int(length) - have, budget)
    while left > 0:
        chunk = sock.recv(min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)
