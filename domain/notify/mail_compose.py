"""A mail from its facts: pure composition with the standard library's EmailMessage.

A text part and an HTML part saying the same; every untrusted value (the display
name, the support contact, a user agent) is escaped in the HTML and never put in
a header, except the support contact as Reply-To when it is a bare address. The
Message-ID is given by the caller, stable per event and recipient, so a mail sent
again is recognisably the same one.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from domain.clock import rfc3339_millis
from domain.notify import mail_texts as texts
from domain.notify.mail_rules import MailKind, should_regenerate

# A bare address (RFC 5321 dot-atom local part, a dotted host name): nothing that a
# header could read as a second address, a comment or a line break.
_BARE_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
MAX_ADDRESS = 254


def bare_address(text: str | None) -> str | None:
    """`text` when it is exactly one plain email address, else None."""
    if text is None or len(text) > MAX_ADDRESS or not _BARE_ADDRESS.match(text):
        return None
    return text


@dataclass(frozen=True)
class MailFacts:
    """What one mail tells, read from the event, the user and the organization."""

    kind: MailKind
    to: str
    org_name: str
    occurred_at: datetime
    support_contact: str | None = None
    display_name: str | None = None
    where_ip: str | None = None
    where_agent: str | None = None
    by: str | None = None
    set_id: str | None = None
    remaining: int | None = None
    until: datetime | None = None
    factor: str | None = None
    address_field: str | None = None
    repudiation_url: str | None = None


def readable(moment: datetime) -> str:
    return moment.strftime("%A %d %B %Y, %H:%M UTC")


def _fields(facts: MailFacts) -> dict[str, str]:
    if facts.where_ip and facts.where_agent:
        where = texts.WHERE_WITH_AGENT.format(ip=facts.where_ip, user_agent=facts.where_agent)
    elif facts.where_ip:
        where = texts.WHERE.format(ip=facts.where_ip)
    else:
        where = texts.WHERE_UNKNOWN
    until = facts.until
    return {
        "when": rfc3339_millis(facts.occurred_at),
        "when_readable": readable(facts.occurred_at),
        "where": where,
        "set_id": facts.set_id or "",
        "remaining": "" if facts.remaining is None else str(facts.remaining),
        "by": facts.by or texts.BY_UNKNOWN,
        "until": "" if until is None else rfc3339_millis(until),
        "until_readable": "" if until is None else readable(until),
        "factor": texts.FACTOR_NAMES.get(facts.factor or "", "second factor"),
        "address_field": texts.ADDRESS_FIELDS.get(facts.address_field or "", "email address"),
    }


def paragraphs(facts: MailFacts) -> list[str]:
    """The body's paragraphs as plain text (the repudiation link apart)."""
    fields = _fields(facts)
    greeting = (
        texts.GREETING.format(display_name=facts.display_name)
        if facts.display_name
        else texts.GREETING_ANONYMOUS
    )
    said = [greeting, *(line.format(**fields) for line in texts.FACTS[facts.kind])]
    if facts.kind == MailKind.CODE_USED and should_regenerate(facts.remaining):
        said.append(texts.REGENERATE)
    said.append(texts.ORIGIN.format(org=facts.org_name))
    if facts.support_contact:
        said.append(texts.SUPPORT.format(support=facts.support_contact))
    return said


def _text(facts: MailFacts, said: list[str]) -> str:
    parts = list(said)
    if facts.repudiation_url:
        parts.append(f"{texts.REPUDIATION_HEADING}: {texts.REPUDIATION}\n{facts.repudiation_url}")
    parts.append(texts.NOT_REPLY)
    return "\n\n".join(parts) + "\n"


def _html(facts: MailFacts, said: list[str]) -> str:
    body = [f"<p>{html.escape(p)}</p>" for p in said]
    if facts.repudiation_url:
        url = html.escape(facts.repudiation_url, quote=True)
        body.append(
            f"<h2>{html.escape(texts.REPUDIATION_HEADING)}</h2>"
            f"<p>{html.escape(texts.REPUDIATION)}</p>"
            f'<p><a href="{url}">{url}</a></p>'
        )
    body.append(f"<p>{html.escape(texts.NOT_REPLY)}</p>")
    title = html.escape(texts.SUBJECTS[facts.kind])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def compose(facts: MailFacts, sender: str, message_id: str) -> EmailMessage:
    """The message, ready to send: From `sender`, To the one recipient, both parts."""
    message = EmailMessage()
    message["Subject"] = texts.SUBJECTS[facts.kind]
    message["From"] = sender
    # The bare address only: a display name is the user's own text, kept out of headers.
    message["To"] = Address(addr_spec=facts.to)
    message["Date"] = format_datetime(facts.occurred_at)
    message["Message-ID"] = message_id
    reply_to = bare_address(facts.support_contact)
    if reply_to is not None:
        message["Reply-To"] = Address(addr_spec=reply_to)
    # RFC 3834: an automatic message; auto-responders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    said = paragraphs(facts)
    message.set_content(_text(facts, said))
    message.add_alternative(_html(facts, said), subtype="html")
    return message


def message_id(event_id: str, kind: str, recipient_kind: str, sender: str) -> str:
    """`<event.kind.recipient@domain of the sender>`: one per event and address."""
    domain = sender.rpartition("@")[2].strip(" >") or "localhost"
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        domain = "localhost"
    return f"<{event_id}.{kind}.{recipient_kind}@{domain}>"
