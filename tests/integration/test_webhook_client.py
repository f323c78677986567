"""The webhook client against a real receiver on 127.0.0.1, names resolved by a stub
(never real DNS): each MFA_WEBHOOK_ALLOW_PRIVATE setting refuses what the contract
says, every resolved address is checked, and the connection goes to the address that
was checked even when the name's answer changes (DNS rebinding)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from domain.notify.webhook_addresses import AllowPrivate
from domain.notify.webhook_delivery import Answer, Attempt
from infra.webhook_client import WebhookClient
from tests.support.receiver import Receiver, Reply, receiver
from tests.support.smtp import self_signed

NAME = "hooks.example.test"


class StubResolver:
    """Answers from a script, one answer a call (the last repeats)."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, host: str, port: int) -> Sequence[str]:
        assert host == NAME
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def attempt(url: str) -> Attempt:
    return Attempt(1, "wh", url, "msg-1", b"{}", 1, ("whsec_" + "a" * 43 + "=",))


def by_name(rx: Receiver) -> str:
    return f"http://{NAME}:{rx.port}/hook"


REFUSED_EVERYWHERE = [
    "169.254.169.254",
    "100.64.0.1",
    "::ffff:169.254.169.254",
    "0.0.0.0",  # noqa: S104 (an address under test; nothing binds)
    "fe80::1",
]


@pytest.mark.parametrize("allow", list(AllowPrivate))
@pytest.mark.parametrize(
    ("address", "admitted_under"),
    [
        ("127.0.0.1", {AllowPrivate.LOOPBACK, AllowPrivate.PRIVATE}),
        ("::1", {AllowPrivate.LOOPBACK, AllowPrivate.PRIVATE}),
        ("10.0.0.1", {AllowPrivate.PRIVATE}),
        *((a, set()) for a in REFUSED_EVERYWHERE),
    ],
)
def test_each_setting_refuses_what_the_contract_says(
    allow: AllowPrivate, address: str, admitted_under: set[AllowPrivate]
) -> None:
    client = WebhookClient(allow, StubResolver([address]), total_seconds=2)
    if allow in admitted_under:
        assert client.address_for(NAME, 443) == address
    else:
        with pytest.raises(Exception, match="not admitted"):
            client.address_for(NAME, 443)
    # The same, as a literal address in the URL: refused without any connection.
    literal = f"[{address}]" if ":" in address else address
    if allow not in admitted_under:
        answer = client.send(attempt(f"https://{literal}:9/hook"))
        assert answer.status is None and answer.error is not None and "not admitted" in answer.error


def test_a_name_resolving_to_loopback_reaches_the_receiver_only_when_admitted() -> None:
    with receiver() as rx:
        refused = WebhookClient(AllowPrivate.NONE, StubResolver(["127.0.0.1"]), total_seconds=2)
        answer = refused.send(attempt(f"https://{NAME}:{rx.port}/hook"))
        assert answer.status is None and rx.requests() == []
        admitted = WebhookClient(
            AllowPrivate.LOOPBACK, StubResolver(["127.0.0.1"]), total_seconds=2
        )
        assert admitted.send(attempt(by_name(rx))).status == 200
        (got,) = rx.requests()
        assert got.headers["host"] == f"{NAME}:{rx.port}"  # the name, though we connected to the IP
        assert got.headers["webhook-id"] == "msg-1"


def test_one_bad_address_among_the_answers_refuses_the_name() -> None:
    with receiver() as rx:
        client = WebhookClient(
            AllowPrivate.LOOPBACK, StubResolver(["127.0.0.1", "169.254.169.254"]), total_seconds=2
        )
        answer = client.send(attempt(by_name(rx)))
        assert answer.status is None and rx.requests() == []


def test_rebinding_after_the_check_cannot_redirect_the_connection() -> None:
    # The name answers an admitted address first, a refused one on any later lookup:
    # a client that looked the name up again to connect would go to 10.0.0.1.
    with receiver() as rx:
        resolver = StubResolver(["127.0.0.1"], ["10.0.0.1"])
        client = WebhookClient(AllowPrivate.LOOPBACK, resolver, total_seconds=2)
        assert client.send(attempt(by_name(rx))).status == 200
        assert resolver.calls == 1 and len(rx.requests()) == 1


def test_rebinding_the_other_way_is_refused_before_any_connection() -> None:
    with receiver() as rx:
        resolver = StubResolver(["169.254.169.254"], ["127.0.0.1"])
        client = WebhookClient(AllowPrivate.LOOPBACK, resolver, total_seconds=2)
        answer = client.send(attempt(by_name(rx)))
        assert answer.status is None and "not admitted" in (answer.error or "")
        assert resolver.calls == 1 and rx.requests() == []


def test_plain_http_needs_the_loopback_setting() -> None:
    with receiver() as rx:
        client = WebhookClient(AllowPrivate.NONE, StubResolver(["127.0.0.1"]))
        assert client.send(attempt(rx.url)).status is None
        assert rx.requests() == []


def test_a_redirect_is_not_followed() -> None:
    with receiver(Reply(302, headers=(("Location", "http://127.0.0.1:9/elsewhere"),))) as rx:
        answer = WebhookClient(AllowPrivate.LOOPBACK, total_seconds=2).send(attempt(rx.url))
        assert (answer.status, answer.error) == (302, "answered 302")
        assert len(rx.requests()) == 1


def test_a_receiver_that_never_answers_is_given_up_at_the_deadline() -> None:
    with receiver(Reply(hang=True)) as rx:
        client = WebhookClient(AllowPrivate.LOOPBACK, total_seconds=1)
        started = time.monotonic()
        answer = client.send(attempt(rx.url))
        took = time.monotonic() - started
        assert answer.status is None and answer.error == "timed out"
        assert took < 5, took  # the 1 s budget, with room for a slow machine
        assert len(rx.requests()) == 1


@contextmanager
def trickling(first: bytes, then: bytes, *, reads_request: bool) -> Iterator[int]:
    """A server on 127.0.0.1 (its port) that sends `first`, then `then` every 0.2 s
    for at most 20 s (well past any budget here): no single read waits long enough
    for the socket's own timeout, only the attempt's budget ends it."""
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:

        def trickle() -> None:
            conn, _ = server.accept()
            with conn:
                if reads_request:
                    conn.recv(65536)
                conn.sendall(first)
                for _ in range(100):
                    if stop.wait(0.2):
                        return
                    try:
                        conn.sendall(then)
                    except OSError:
                        return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            stop.set()
            thread.join(5)


def timed_send(client: WebhookClient, url: str) -> tuple[Answer, float]:
    started = time.monotonic()
    answer = client.send(attempt(url))
    return answer, time.monotonic() - started


def test_a_receiver_trickling_its_tls_handshake_is_cut_off_at_the_budget() -> None:
    # A TLS record header that announces 16 KiB, then a byte at a time.
    with trickling(b"\x16\x03\x03\x40\x00", b"\x00", reads_request=False) as port:
        client = WebhookClient(AllowPrivate.LOOPBACK, StubResolver(["127.0.0.1"]), total_seconds=1)
        answer, elapsed = timed_send(client, f"https://{NAME}:{port}/hook")
    assert (answer.status, answer.error) == (None, "timed out")  # not "tls failed"
    assert elapsed < 3, f"the handshake held the attempt {elapsed:.1f} s"


class RawReceiver:
    """A receiver that answers its connection with `answer`, as bytes, and then keeps
    the connection open until the test ends (or, with `reset`, resets it at once:
    SO_LINGER 0); it records what the request was."""

    def __init__(self, answer: bytes, *, reset: bool = False) -> None:
        self.answer = answer
        self.reset = reset
        self.got: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request or len(request) < self._length(request):
                chunk = conn.recv(65536)
                if not chunk:  # the client went away mid-request: nothing to record
                    return
                request += chunk
            self.got.append(request)
            with contextlib.suppress(OSError):  # the client hung up once it read its budget
                conn.sendall(self.answer)
            if self.reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            self.done.wait(10)

    @staticmethod
    def _length(request: bytes) -> int:
        """The whole request's length once its head is in: head, blank line, body."""
        head, _, _ = request.partition(b"\r\n\r\n")
        body = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return len(head) + 4 + body

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.server.close()


def test_the_request_on_the_wire_and_an_answer_whose_connection_stays_open() -> None:
    # HTTP/1.1 with Content-Length and no close: the attempt ends at the body's end,
    # not at the budget's (the client asked for Connection: close; not every server obeys).
    rx = RawReceiver(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
    try:
        client = WebhookClient(AllowPrivate.LOOPBACK, StubResolver(["127.0.0.1"]), total_seconds=5)
        answer, took = timed_send(client, f"http://{NAME}:{rx.port}/hook?via=test")
    finally:
        rx.close()
    assert (answer.status, answer.error) == (202, None)
    assert took < 2.5, took
    (request,) = rx.got
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook?via=test HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Host"] == f"{NAME}:{rx.port}"
    assert fields["Content-Length"] == "2" and body == b"{}"
    assert fields["Connection"] == "close"
    assert fields["webhook-id"] == "msg-1" and fields["webhook-signature"].startswith("v1,")


def test_an_answer_whose_head_outgrows_64_kib_fails_the_attempt() -> None:
    rx = RawReceiver(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * (70 * 1024) + b"\r\n\r\n")
    try:
        answer = WebhookClient(AllowPrivate.LOOPBACK, total_seconds=5).send(
            attempt(f"http://127.0.0.1:{rx.port}/hook")
        )
    finally:
        rx.close()
    assert answer.status is None and answer.error == "connection failed (BadAnswer)"


@pytest.mark.parametrize("path", ["/a b", "/caf\u00e9", "/a\x00"])
def test_a_url_that_could_split_the_request_is_refused_before_connecting(path: str) -> None:
    with receiver() as rx:
        answer = WebhookClient(AllowPrivate.LOOPBACK, total_seconds=2).send(
            attempt(f"http://127.0.0.1:{rx.port}{path}")
        )
        assert (answer.status, answer.error) == (None, "the url is not valid")
        assert rx.requests() == []


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_budget() -> None:
    # A head that never ends, a byte at a time: only the watcher can end the attempt.
    with trickling(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", reads_request=True) as port:
        client = WebhookClient(AllowPrivate.LOOPBACK, total_seconds=1)
        answer, elapsed = timed_send(client, f"http://127.0.0.1:{port}/hook")
    assert (answer.status, answer.error) == (None, "timed out")
    assert elapsed < 3, f"the trickle held the attempt {elapsed:.1f} s"


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A receiver's context with a certificate for localhost (and 127.0.0.1), and a
    client's context that trusts it."""
    cert_file, key_file = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


def test_https_reaches_the_checked_address_with_the_certificate_checked_for_the_name(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, trusting = tls_pair
    with receiver(tls=server) as rx:
        # Resolved by a stub, never real DNS: "localhost" is the name the certificate carries.
        client = WebhookClient(
            AllowPrivate.LOOPBACK, lambda host, port: ["127.0.0.1"], total_seconds=5, tls=trusting
        )
        answer = client.send(attempt(f"https://localhost:{rx.port}/hook"))
        assert (answer.status, answer.error) == (200, None)
        (got,) = rx.requests()
        assert got.headers["host"] == f"localhost:{rx.port}" and got.body == b"{}"
        # The same receiver by a name its certificate does not carry: no request is made.
        answer = client.send(attempt(f"https://{NAME}:{rx.port}/hook"))
        assert (answer.status, answer.error) == (None, "tls failed")
        assert len(rx.requests()) == 1


def test_a_reset_while_the_body_drains_keeps_the_answer() -> None:
    # A 410 (which disables the webhook) whose body never comes: the connection is
    # reset after the head. The status was read; it is the answer.
    rx = RawReceiver(b"HTTP/1.1 410 Gone\r\nContent-Length: 1000\r\n\r\npartial", reset=True)
    try:
        answer, _ = timed_send(
            WebhookClient(AllowPrivate.LOOPBACK, total_seconds=5),
            f"http://127.0.0.1:{rx.port}/hook",
        )
    finally:
        rx.close()
    assert (answer.status, answer.error) == (410, "answered 410")
