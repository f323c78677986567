"""A real SMTP server for the tests (aiosmtpd on 127.0.0.1), and what arrived at it.

`smtp_server()` starts one, optionally offering STARTTLS with a self-signed
certificate made here (`cryptography`); `Inbox.messages` holds every message
parsed with the modern email policy, with its envelope and whether it came
over TLS. `parts()` decodes every part of a message, for the leak hunt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.processes import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    tls: bool


@dataclass
class Inbox:
    messages: list[Received] = field(default_factory=list)
    refuse: bool = False  # answer 451 to every message (a server in trouble)
    stall: bool = False  # take the message, then answer nothing until released
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "451 4.3.0 try again later"
        stalled = self.stall
        raw = bytes(envelope.content)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.messages.append(
                Received(
                    envelope.mail_from,
                    tuple(envelope.rcpt_tos),
                    parsed,
                    raw,
                    session.ssl is not None,
                )
            )
        for _ in range(1200):  # at most a minute: every wait in a test is bounded
            if not (stalled and self.stall):
                break
            await asyncio.sleep(0.05)
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if address in m.rcpt_tos]

    def count(self) -> int:
        with self._lock:
            return len(self.messages)


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    inbox: Inbox
    ca_file: Path | None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(
            cafile=None if self.ca_file is None else str(self.ca_file)
        )


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextmanager
def smtp_server(tls_folder: Path | None = None) -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1; with `tls_folder`, it offers STARTTLS."""
    inbox = Inbox()
    kwargs: dict[str, Any] = {}
    ca_file = None
    if tls_folder is not None:
        ca_file, key_file = self_signed(tls_folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca_file, key_file)
        kwargs["tls_context"] = context
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, inbox, ca_file)
    finally:
        controller.stop()


def parts(message: EmailMessage) -> list[str]:
    """Every header and every decoded part of a message, as text."""
    found = [f"{name}: {value}" for name, value in message.items()]
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            found.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return found
