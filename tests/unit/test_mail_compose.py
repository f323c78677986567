"""The mail rules and their composition: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from domain.audit.types import EventType
from domain.notify import mail_texts
from domain.notify.mail_compose import MailFacts, bare_address, compose, message_id
from domain.notify.mail_rules import (
    MailKind,
    RecipientKind,
    kind_of,
    offers_repudiation,
    recipients,
    should_send,
)
from tests.support.smtp import parts

AT = datetime(2026, 11, 28, 9, 14, 3, 120000, tzinfo=UTC)
SENDER = "security@mfa.example"
LINK = "https://mfa.example/v1/repudiations/TICKET"


def facts(**changes: object) -> MailFacts:
    base: dict[str, object] = {
        "kind": MailKind.CODE_USED,
        "to": "alice@example.com",
        "org_name": "acme",
        "occurred_at": AT,
        "where_ip": "203.0.113.7",
        "where_agent": "Firefox/140",
        "remaining": 3,
        "repudiation_url": LINK,
    }
    base.update(changes)
    return MailFacts(**base)  # type: ignore[arg-type]


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        (EventType.ENROLLMENT_CONFIRMED, MailKind.ENROLLED),
        (EventType.REGENERATION_SUCCEEDED, MailKind.CODES_GENERATED),
        (EventType.CODE_ACCEPTED, MailKind.CODE_USED),
        (EventType.CODES_REVOKED, MailKind.CODES_REVOKED),
        (EventType.MFA_RESET, MailKind.MFA_RESET),
        (EventType.LOCKOUT_CLEARED, MailKind.UNLOCKED),
        (EventType.LOCKOUT_STARTED, MailKind.THROTTLED),
        (EventType.LOCKOUT_PERMANENT, MailKind.LOCKED),
        (EventType.USER_REPUDIATED, MailKind.REPUDIATED),
    ],
)
def test_the_events_of_the_table_each_cause_their_mail(event_type: str, kind: MailKind) -> None:
    assert kind_of(event_type) == kind


@pytest.mark.parametrize(
    "event_type",
    [
        EventType.CODE_REJECTED,
        EventType.REGENERATION_REQUESTED,
        EventType.SHEET_RETRIEVED,
        EventType.TOKEN_ISSUED,
        EventType.NOTIFICATION_SENT,
        EventType.NOTIFICATION_FAILED,
        EventType.POLICY_CHANGED,
    ],
)
def test_other_events_cause_no_mail(event_type: str) -> None:
    assert kind_of(event_type) is None


def test_only_the_repudiation_mail_is_sent_with_notifications_off() -> None:
    assert [k for k in MailKind if should_send(k, False)] == [MailKind.REPUDIATED]
    assert all(should_send(k, True) for k in MailKind)
    assert not offers_repudiation(MailKind.REPUDIATED)
    assert offers_repudiation(MailKind.CODE_USED)


def test_each_address_gets_its_own_mail_and_the_same_one_twice_gets_one() -> None:
    assert recipients("a@x.org", "b@y.org") == [
        (RecipientKind.EMAIL, "a@x.org"),
        (RecipientKind.RECOVERY_EMAIL, "b@y.org"),
    ]
    assert recipients(None, "b@y.org") == [(RecipientKind.RECOVERY_EMAIL, "b@y.org")]
    assert recipients("a@x.org", "A@X.org") == [(RecipientKind.EMAIL, "a@x.org")]
    assert recipients(None, None) == []


def test_a_mail_has_text_and_html_saying_the_facts_with_both_time_forms() -> None:
    message = compose(facts(), SENDER, "<e1.code_used.email@mfa.example>")
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == SENDER
    assert message["To"] == "alice@example.com"
    assert message["Message-ID"] == "<e1.code_used.email@mfa.example>"
    assert message["Subject"] == mail_texts.SUBJECTS[MailKind.CODE_USED]
    for body in (text_of(message), html_of(message)):
        assert "2026-11-28T09:14:03.120Z" in body
        assert "Saturday 28 November 2026, 09:14 UTC" in body
        assert "203.0.113.7" in body and "Firefox/140" in body
        assert "3 backup codes remain" in body
        assert "acme" in body
        assert "If this wasn&#x27;t you" in body or "If this wasn't you" in body
        assert LINK in body
    assert mail_texts.REGENERATE not in text_of(message)


@pytest.mark.parametrize("remaining", [2, 1, 0])
def test_two_or_fewer_remaining_says_to_regenerate(remaining: int) -> None:
    message = compose(facts(remaining=remaining), SENDER, "<x@y>")
    assert mail_texts.REGENERATE in text_of(message)


def test_untrusted_text_is_escaped_in_html_and_kept_out_of_headers() -> None:
    evil = '<script>alert(1)</script>"\r\nBcc: victim@example.com'
    message = compose(
        facts(
            display_name=evil,
            support_contact="<img src=x onerror=alert(1)> Bcc: x@y.z",
            where_agent="<b>agent</b>",
        ),
        SENDER,
        "<x@y>",
    )
    page = html_of(message)
    assert "<script>" not in page and "<img" not in page and "<b>agent" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page
    assert message["Bcc"] is None and message["Reply-To"] is None
    headers = "\n".join(f"{k}: {v}" for k, v in message.items())
    assert "script" not in headers and "img" not in headers and "victim" not in headers


def test_a_bare_address_as_support_contact_becomes_reply_to_and_nothing_else_does() -> None:
    message = compose(facts(support_contact="help@acme.example"), SENDER, "<x@y>")
    assert message["Reply-To"] == "help@acme.example"
    assert "Contact help@acme.example" in text_of(message)
    for text in (
        "Call +1 555 0100",
        "help@acme.example, evil@x.org",
        "Help <help@acme.example>",
        "help@acme.example\r\nBcc: x@y.org",
        "help@localhost",
    ):
        assert bare_address(text) is None, text
        assert compose(facts(support_contact=text), SENDER, "<x@y>")["Reply-To"] is None


def test_the_message_id_is_stable_per_event_kind_and_address() -> None:
    first = message_id("ev-1", "code_used", "email", "Security <security@mfa.example>")
    assert first == message_id("ev-1", "code_used", "email", "Security <security@mfa.example>")
    assert first == "<ev-1.code_used.email@mfa.example>"
    assert first != message_id("ev-1", "code_used", "recovery_email", "security@mfa.example")


def test_the_repudiation_mail_has_no_link_and_says_what_was_done() -> None:
    message = compose(
        facts(kind=MailKind.REPUDIATED, repudiation_url=None, remaining=None), SENDER, "<x@y>"
    )
    text = text_of(message)
    assert "/v1/repudiations/" not in text
    assert "locked until an administrator resets" in text


@pytest.mark.parametrize("kind", list(MailKind))
def test_every_kind_composes_with_the_facts_it_may_miss(kind: MailKind) -> None:
    message = compose(
        MailFacts(kind=kind, to="a@x.org", org_name="acme", occurred_at=AT), SENDER, "<x@y>"
    )
    everything = "\n".join(parts(message))
    assert "{" not in text_of(message)  # every field was filled in
    assert "a@x.org" in everything
