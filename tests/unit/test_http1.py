"""infra.http1 over real connected sockets (a socketpair): the request's bytes and what
it refuses, and the answer read within its byte budget, whatever way it arrives."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from infra import http1


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)
    with ours, theirs:
        yield ours, theirs


def answered(pair: tuple[socket.socket, socket.socket], *pieces: bytes, budget: int = 65536):
    """read_answer on our end while the other end sends `pieces` one after another."""
    ours, theirs = pair
    sender = threading.Thread(target=lambda: [theirs.sendall(p) for p in pieces])
    sender.start()
    try:
        return http1.read_answer(ours, budget)
    finally:
        sender.join(5)


def test_the_request_is_one_piece_with_host_length_and_close() -> None:
    wire = http1.request(
        "POST", "hooks.example.test:8443", "/hook?x=1", {"webhook-id": "msg_1"}, b'{"a":1}'
    )
    head, _, body = wire.partition(b"\r\n\r\n")
    assert body == b'{"a":1}'
    assert head.split(b"\r\n") == [
        b"POST /hook?x=1 HTTP/1.1",
        b"Host: hooks.example.test:8443",
        b"webhook-id: msg_1",
        b"Content-Length: 7",
        b"Connection: close",
    ]


@pytest.mark.parametrize(
    "target",
    ["/a\r\nX-Injected: 1", "/a b", "/caf\u00e9", "", "/a\x00", "/a\x7f"],
)
def test_a_target_that_could_split_the_request_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="target"):
        http1.request("POST", "h", target, {}, b"")


@pytest.mark.parametrize(
    ("name", "value"),
    [("webhook-id", "a\r\nX-Injected: 1"), ("webhook-id", "a\nb"), ("bad name", "v"), ("", "v")],
)
def test_a_header_that_could_split_the_request_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="header"):
        http1.request("POST", "h", "/", {name: value}, b"")


@pytest.mark.parametrize(
    ("host", "port", "default", "expected"),
    [
        ("hooks.example.test", 443, 443, "hooks.example.test"),
        ("hooks.example.test", 8443, 443, "hooks.example.test:8443"),
        ("::1", 8080, 80, "[::1]:8080"),
        ("b\u00fccher.example", 443, 443, "xn--bcher-kva.example"),
    ],
)
def test_the_host_field(host: str, port: int, default: int, expected: str) -> None:
    assert http1.host_header(host, port, default) == expected


def test_status_and_headers_arriving_a_byte_at_a_time(pair) -> None:
    answer = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nX-A: 1\r\n\r\n"
    status, headers = answered(pair, *(answer[i : i + 1] for i in range(len(answer))))
    assert status == 503
    assert headers == {"retry-after": "120", "x-a": "1"}


def test_bare_line_feeds_a_status_without_reason_and_folded_or_repeated_headers(pair) -> None:
    status, headers = answered(
        pair, b"HTTP/1.0 429\nRetry-After: 5\nX-Long: a\n  b\nretry-after: 7\n\n"
    )
    assert status == 429
    assert headers == {"retry-after": "7", "x-long": "a b"}


def test_header_lines_that_are_not_name_value_are_skipped_and_the_status_stands(pair) -> None:
    status, headers = answered(
        pair,
        b"HTTP/1.1 503 Busy\r\n  folded onto nothing\r\nno colon here\r\n"
        b"bad name: v\r\n  folded onto a skipped line\r\nRetry-After : 30\r\n\r\n",
    )
    assert (status, headers) == (503, {"retry-after": "30"})


@pytest.mark.parametrize("length", ["\u00b2", "9" * 5000, "-1", "5, 5"])
def test_a_content_length_that_is_no_plain_number_leaves_the_body_unread(pair, length: str) -> None:
    head = b"HTTP/1.1 410 Gone\r\nContent-Length: " + length.encode("latin-1") + b"\r\n\r\n"
    assert answered(pair, head)[0] == 410


def test_101_is_a_final_answer(pair) -> None:
    assert answered(pair, b"HTTP/1.1 101 Switching Protocols\r\n\r\n")[0] == 101


def test_interim_answers_are_read_past(pair) -> None:
    status, headers = answered(
        pair,
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    )
    assert (status, headers) == (204, {})


def test_a_body_by_content_length_is_read_to_its_end_not_to_the_close(pair) -> None:
    ours, _ = pair  # the other end stays open: waiting for its close would hang
    status, _ = answered(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", b"cde")
    assert status == 200
    ours.setblocking(False)
    with pytest.raises(BlockingIOError):
        ours.recv(16)  # all five were taken: nothing is left unread


def test_without_a_length_the_body_is_left_unread(pair) -> None:
    status, _ = answered(pair, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status == 200  # returned at the head's end, though no body (nor close) came


def test_a_body_is_read_only_as_far_as_the_budget(pair) -> None:
    ours, _ = pair
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    status, _ = answered(pair, head + b"x" * 100, b"y" * 1000, budget=len(head) + 500)
    assert status == 200
    left = b""
    while len(left) < 600:
        left += ours.recv(4096)
    assert left == b"y" * 600  # 400 of the 1,000 were read, the budget's last bytes


def test_a_head_longer_than_the_budget_is_refused_having_read_no_more(pair) -> None:
    ours, _ = pair
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200
    with pytest.raises(http1.BadAnswer, match="budget"):
        answered(pair, head, b"\r\n\r\n", budget=100)
    assert len(ours.recv(4096)) > 0  # what was beyond the budget is still unread


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * (http1.MAX_HEADERS + 1) + b"\r\n",
    ],
)
def test_what_is_not_an_http_1_answer_is_refused(pair, answer: bytes) -> None:
    with pytest.raises(http1.BadAnswer):
        answered(pair, answer)


def test_a_connection_closed_before_the_head_ended_is_refused(pair) -> None:
    ours, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\n")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(http1.BadAnswer, match="closed"):
        http1.read_answer(ours, 65536)
