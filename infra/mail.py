"""The mail transport: an SMTP server (MFA_SMTP_URL), or a Maildir under var/mail/.

`smtp://[user:pass@]host:port` speaks STARTTLS whenever the server offers it
(the certificate checked against the system's CAs or MFA_SMTP_CA_FILE) and never
sends a password over a connection it did not encrypt, unless the server is on
loopback; `smtps://` is TLS from the first byte. Every network step has a
timeout. With no URL set (the embedded default) mails are written to a Maildir
(mode 0700), so a newcomer can read what the service sent. The password never
reaches a log or an exception text: failures are named by their type and SMTP
reply code.
"""

from __future__ import annotations

import ipaddress
import mailbox
import os
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from infra.settings import Settings

TIMEOUT_SECONDS = 10.0
SMTP_PORT, SMTPS_PORT = 25, 465


class MailTransport(Protocol):
    def send(self, message: EmailMessage) -> None: ...


class MailError(Exception):
    """A send that failed; the text is safe to log and store (no address, no password)."""


@dataclass(frozen=True)
class MaildirTransport:
    folder: Path

    def send(self, message: EmailMessage) -> None:
        for path in (self.folder, self.folder / "tmp", self.folder / "new", self.folder / "cur"):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        mailbox.Maildir(self.folder, create=True).add(message.as_bytes())


@dataclass(frozen=True)
class SmtpTransport:
    host: str
    port: int
    implicit_tls: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    context: ssl.SSLContext = field(default_factory=ssl.create_default_context, repr=False)
    timeout: float = TIMEOUT_SECONDS

    @classmethod
    def from_url(cls, url: str, context: ssl.SSLContext | None = None) -> SmtpTransport:
        parts = urlsplit(url)
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (SMTPS_PORT if implicit else SMTP_PORT),
            implicit_tls=implicit,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            context=context or ssl.create_default_context(),
        )

    def send(self, message: EmailMessage) -> None:
        try:
            self._send(message)
        except smtplib.SMTPResponseException as exc:
            # The reply text may repeat the recipient's address: the code only.
            raise MailError(f"{type(exc).__name__} {exc.smtp_code}") from None
        except smtplib.SMTPRecipientsRefused:
            raise MailError("SMTPRecipientsRefused") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(type(exc).__name__) from None

    def _send(self, message: EmailMessage) -> None:
        client: smtplib.SMTP
        if self.implicit_tls:
            client = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            client.ehlo()
            encrypted = self.implicit_tls
            if not encrypted and client.has_extn("starttls"):
                client.starttls(context=self.context)
                client.ehlo()
                encrypted = True
            if self.username is not None:
                if not encrypted and not _loopback(self.host):
                    raise MailError("refused to send the SMTP password unencrypted")
                client.login(self.username, self.password or "")
            client.send_message(message)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_for(settings: Settings) -> MailTransport:
    if settings.smtp_url is None:
        return MaildirTransport(settings.mail_folder)
    context = ssl.create_default_context(
        cafile=None if settings.smtp_ca_file is None else str(settings.smtp_ca_file)
    )
    return SmtpTransport.from_url(settings.smtp_url, context)
