"""Mails to users, through a real SMTP server the test starts (aiosmtpd), read back
as they arrived: one per address, the facts of the event, the policy obeyed,
STARTTLS when offered, the Maildir default, and nothing lost or doubled by a crash."""

from __future__ import annotations

import mailbox
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from domain import outbox
from domain.audit.types import EventType
from domain.clock import utcnow
from domain.models import AuditEvent, MailDelivery, MailStatus, OutboxMessage
from domain.notify import mail, mail_delivery
from domain.notify.mail import TASK_SEND_MAIL
from domain.notify.mail_texts import REGENERATE, SUBJECTS
from infra.mail import MaildirTransport, SmtpTransport, transport_for
from infra.services import Services
from tests.integration.mail_helpers import (
    LINK,
    PRIMARY,
    RECOVERY,
    append,
    at,
    mails_of,
    person,
    send_all,
    smtp_of,
)
from tests.support.smtp import parts, smtp_server
from workers.mail import RETRY, SENT, SKIPPED, config_of, send_one

CASES = [
    (EventType.ENROLLMENT_CONFIRMED, {}, "enrolled", ["198.51.100.4"]),
    (
        EventType.REGENERATION_SUCCEEDED,
        {"regeneration_id": "r1", "set_id": "K7Q2", "code_count": 5},
        "codes_generated",
        ["K7Q2"],
    ),
    (
        EventType.CODE_ACCEPTED,
        {"remaining": 4, "set_id": "K7Q2", "client_ip": "203.0.113.9", "user_agent": "Lynx/2"},
        "code_used",
        ["203.0.113.9", "Lynx/2", "4 backup codes remain"],
    ),
    (EventType.CODES_REVOKED, {"count": 5}, "codes_revoked", ["root"]),
    (EventType.MFA_RESET, {"was_enrolled": True}, "mfa_reset", ["root"]),
    (EventType.LOCKOUT_CLEARED, {"factors": ["totp"]}, "unlocked", ["root"]),
    (
        EventType.LOCKOUT_STARTED,
        {"factor": "backup_codes", "failures": 20, "until": "2026-11-28T13:00:00.000Z"},
        "throttled",
        ["2026-11-28T13:00:00.000Z", "backup codes"],
    ),
    (
        EventType.LOCKOUT_PERMANENT,
        {"factor": "totp", "failures": 100},
        "locked",
        ["until an administrator acts", "authenticator app"],
    ),
]


@pytest.mark.parametrize(("event_type", "details", "kind", "facts"), CASES)
def test_each_event_mails_each_address_on_its_own(
    svc: Services, event_type: str, details: dict[str, object], kind: str, facts: list[str]
) -> None:
    org_id, user_id = person(svc, support_contact="help@acme.example")
    event_id = append(svc, org_id, event_type, details)
    with smtp_server() as server:
        assert send_all(svc, smtp_of(server), user_id) == [SENT, SENT]
        to_primary, to_recovery = server.inbox.to(PRIMARY), server.inbox.to(RECOVERY)
    assert len(to_primary) == len(to_recovery) == 1
    primary, recovery = to_primary[0].message, to_recovery[0].message
    assert primary["Message-ID"] != recovery["Message-ID"]
    assert event_id in primary["Message-ID"] and event_id in recovery["Message-ID"]
    for message, other in ((primary, RECOVERY), (recovery, PRIMARY)):
        assert message["Subject"] == SUBJECTS[mail.MailKind(kind)]
        assert message["Reply-To"] == "help@acme.example"
        everything = "\n".join(parts(message))
        assert other not in everything  # neither shows the other address
        assert org_id in everything and "help@acme.example" in everything
        for fact in facts:
            assert fact in everything, fact
        assert len(LINK.findall(everything)) >= 2  # text and HTML both hold the link
    rows = mails_of(svc, user_id)
    assert {r.status for r in rows} == {MailStatus.SENT}
    assert all(r.ticket_ciphertext is None for r in rows)  # the link left with the mail


def test_each_outcome_is_audited_without_the_address(svc: Services) -> None:
    org_id, user_id = person(svc)
    event_id = append(svc, org_id, EventType.CODES_REVOKED, {"count": 5})
    with smtp_server() as server:
        send_all(svc, smtp_of(server), user_id)
    with svc.unit_of_work() as uow:
        sent = list(
            uow.session.execute(
                select(AuditEvent).where(
                    AuditEvent.org_id == org_id, AuditEvent.type == EventType.NOTIFICATION_SENT
                )
            ).scalars()
        )
    assert len(sent) == 2
    for event in sent:
        assert event.details["event_id"] == event_id
        assert event.details["kind"] == "codes_revoked"
        assert event.details["attempt"] == 1
        assert PRIMARY not in str(event.details) and RECOVERY not in str(event.details)
    assert {e.details["recipient_kind"] for e in sent} == {"email", "recovery_email"}


def test_a_code_used_with_two_left_says_to_regenerate(svc: Services) -> None:
    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.CODE_ACCEPTED, {"remaining": 2, "set_id": "K7Q2"})
    with smtp_server() as server:
        send_all(svc, smtp_of(server), user_id)
        (received,) = server.inbox.messages
    assert REGENERATE in "\n".join(parts(received.message))


def test_no_mail_without_an_address_and_none_for_other_events(svc: Services) -> None:
    org_id, user_id = person(svc, email=None, recovery=None)
    append(svc, org_id, EventType.CODES_REVOKED, {"count": 5})
    org2, user2 = person(svc)
    append(svc, org2, EventType.CODE_REJECTED, {"reason": "wrong"})
    append(svc, org2, EventType.TOKEN_ISSUED, {"token_id": "t"})
    assert mails_of(svc, user_id) == [] and mails_of(svc, user2) == []


def test_notify_users_false_sends_nothing_but_the_repudiation_mail(svc: Services) -> None:
    org_id, user_id = person(svc, notify=False)
    for event_type, details, _kind, _facts in CASES:
        append(svc, org_id, event_type, details)
    assert mails_of(svc, user_id) == []
    append(svc, org_id, EventType.USER_REPUDIATED, {"event_id": "e"})
    rows = mails_of(svc, user_id)
    assert [(r.kind, r.recipient_kind) for r in rows] == [
        ("repudiated", "email"),
        ("repudiated", "recovery_email"),
    ]


def test_the_mail_rows_roll_back_with_their_event(svc: Services) -> None:
    org_id, user_id = person(svc)
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        from domain import audit

        audit.append(uow, org_id, EventType.CODES_REVOKED, "success", audit.CLI, user_id="alice")
        raise RuntimeError("the change failed")
    assert mails_of(svc, user_id) == []


def test_starttls_is_used_when_the_server_offers_it(svc: Services, tmp_path: Path) -> None:
    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.ENROLLMENT_CONFIRMED)
    with smtp_server(tls_folder=tmp_path) as server:
        assert send_all(svc, smtp_of(server), user_id) == [SENT]
        (received,) = server.inbox.messages
    assert received.tls is True


def test_a_certificate_the_client_does_not_trust_is_refused(svc: Services, tmp_path: Path) -> None:
    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.ENROLLMENT_CONFIRMED)
    with smtp_server(tls_folder=tmp_path) as server:
        untrusting = SmtpTransport.from_url(server.url)  # the system's CAs only
        assert send_all(svc, untrusting, user_id) == [RETRY]
        assert server.inbox.count() == 0
    (row,) = mails_of(svc, user_id)
    assert row.status == MailStatus.PENDING and row.last_error == "SSLCertVerificationError"


def test_a_password_is_never_sent_unencrypted_to_a_remote_server() -> None:
    transport = SmtpTransport.from_url("smtp://user:s3cret@mail.example:587")
    assert transport.password == "s3cret"
    assert "s3cret" not in repr(transport)


def test_without_an_smtp_url_mails_land_in_a_private_maildir(svc: Services, tmp_path: Path) -> None:
    transport = transport_for(svc.settings)
    assert isinstance(transport, MaildirTransport)
    assert transport.folder == svc.settings.var_dir / "mail"
    org_id, user_id = person(svc)
    append(svc, org_id, EventType.MFA_RESET)
    assert send_all(svc, transport, user_id) == [SENT, SENT]
    box = mailbox.Maildir(transport.folder, create=False)
    recipients = sorted(str(message["To"]) for message in box)
    assert recipients == sorted([PRIMARY, RECOVERY])
    assert stat.S_IMODE(transport.folder.stat().st_mode) == 0o700


def test_a_crash_between_commit_and_publish_loses_nothing(svc: Services) -> None:
    """No publisher ran after the commit (the process died): the outbox row stays
    pending, and the mail sweep finds the mail once its grace has passed."""
    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.CODES_REVOKED, {"count": 5})
    (row,) = mails_of(svc, user_id)
    with svc.unit_of_work() as uow:
        pending = outbox.pending(uow.session, None)
        assert [(m.task, m.args) for m in pending if m.args.get("mail_id") == row.id] == [
            (TASK_SEND_MAIL, {"mail_id": row.id})
        ]
        assert row.id not in mail.due(uow, utcnow())  # the after-commit publisher's turn
    later = utcnow() + mail.FIRST_ATTEMPT_GRACE + timedelta(seconds=1)
    with svc.unit_of_work() as uow:
        assert row.id in mail.due(uow, later)
    with smtp_server() as server:
        assert send_one(svc, smtp_of(server), row.id, at(later)) == SENT
        # The outbox row published late sends nothing twice.
        assert send_one(svc, smtp_of(server), row.id, at(later)) == SKIPPED
        assert server.inbox.count() == 1


def test_a_worker_killed_after_sending_resends_the_same_message(svc: Services) -> None:
    """Killed between the SMTP answer and the record: the lease runs out, the sweep
    sends again, and the second copy has the same Message-ID and the same link."""
    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.ENROLLMENT_CONFIRMED)
    (row,) = mails_of(svc, user_id)
    now = utcnow()
    with smtp_server() as server:
        transport = smtp_of(server)
        with svc.unit_of_work() as uow:
            claimed = mail_delivery.claim(uow, svc.box, config_of(svc), row.id, now)
        assert claimed is not None
        transport.send(claimed.message)  # ... and the worker dies here
        # While the lease holds, a duplicate message does nothing.
        assert send_one(svc, transport, row.id, at(now + timedelta(seconds=5))) == SKIPPED
        after = now + mail_delivery.LEASE + timedelta(seconds=1)
        with svc.unit_of_work() as uow:
            assert row.id in mail.due(uow, after)
        assert send_one(svc, transport, row.id, at(after)) == SENT
        first, second = server.inbox.messages
    assert first.message["Message-ID"] == second.message["Message-ID"]
    links = [LINK.findall("\n".join(parts(m.message))) for m in (first, second)]
    assert links[0] == links[1] and links[0]
    (done,) = mails_of(svc, user_id)
    assert (done.status, done.attempts) == (MailStatus.SENT, 2)


def test_a_refusing_server_is_retried_with_backoff_then_given_up(svc: Services) -> None:
    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.CODES_REVOKED, {"count": 1})
    (row,) = mails_of(svc, user_id)
    start = row.created_at
    with smtp_server() as server:
        server.inbox.refuse = True
        transport = smtp_of(server)
        assert send_one(svc, transport, row.id, at(start)) == RETRY
        (retrying,) = mails_of(svc, user_id)
        assert retrying.last_error == "SMTPDataError 451"
        assert retrying.next_attempt_at == start + mail_delivery.retry_wait(1)
        # Too early for the retry: the sweep leaves it; at its time, it is due.
        with svc.unit_of_work() as uow:
            assert row.id not in mail.due(uow, start + timedelta(seconds=10))
        with svc.unit_of_work() as uow:
            assert row.id in mail.due(uow, retrying.next_attempt_at)
        day_later = start + mail_delivery.GIVE_UP_AFTER + timedelta(seconds=1)
        assert send_one(svc, transport, row.id, at(day_later)) == "failed"
    (failed,) = mails_of(svc, user_id)
    assert failed.status == MailStatus.FAILED and failed.ticket_ciphertext is None
    with svc.unit_of_work() as uow:
        outcomes = [
            (e.details["attempt"], e.details["final"])
            for e in uow.session.execute(
                select(AuditEvent)
                .where(
                    AuditEvent.org_id == org_id,
                    AuditEvent.type == EventType.NOTIFICATION_FAILED,
                )
                .order_by(AuditEvent.seq)
            ).scalars()
        ]
    assert outcomes == [(1, False), (2, True)]


def test_an_unreachable_server_is_a_retry_naming_only_the_error_type(svc: Services) -> None:
    from tests.support.processes import free_port

    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.CODES_REVOKED, {"count": 1})
    transport = SmtpTransport.from_url(f"smtp://user:pw@127.0.0.1:{free_port()}")
    assert send_all(svc, transport, user_id) == [RETRY]
    (row,) = mails_of(svc, user_id)
    assert row.last_error == "ConnectionRefusedError"


def test_the_address_never_reaches_the_audit_trail_or_the_outbox(svc: Services) -> None:
    org_id, user_id = person(svc)
    append(svc, org_id, EventType.CODE_ACCEPTED, {"remaining": 3, "set_id": "K"})
    with smtp_server() as server:
        send_all(svc, smtp_of(server), user_id)
    with svc.unit_of_work() as uow:
        events = uow.session.execute(select(AuditEvent).where(AuditEvent.org_id == org_id))
        trail = " ".join(str((e.details, e.user_agent)) for e in events.scalars())
        queued = " ".join(str(m.args) for m in uow.session.execute(select(OutboxMessage)).scalars())
        rows = (
            uow.session.execute(
                select(MailDelivery.recipient).where(MailDelivery.user_id == user_id)
            )
            .scalars()
            .all()
        )
    assert PRIMARY in rows
    for address in (PRIMARY, RECOVERY):
        assert address not in trail and address not in queued


def test_a_changed_address_is_told_at_the_old_one_only(svc: Services) -> None:
    from domain import audit, notify

    org_id, user_id = person(svc, email="new@example.com")
    with svc.unit_of_work() as uow:
        # The users API appends its own event beside the change; any event of the
        # user stands in for it here.
        event = audit.append(
            uow, org_id, EventType.USER_CREATED, "success", audit.CLI, user_id="alice"
        )
        notify.address_changed(uow, event, "email", "old@example.com")
        notify.address_changed(uow, event, "not-a-field", "x@example.com")
    (row,) = mails_of(svc, user_id)
    assert (row.kind, row.recipient_kind, row.recipient) == (
        "address_changed",
        "email",
        "old@example.com",
    )
    with smtp_server() as server:
        assert send_all(svc, smtp_of(server), user_id) == [SENT]
        (received,) = server.inbox.messages
    assert received.rcpt_tos == ("old@example.com",)
    text = "\n".join(parts(received.message))
    assert "email address of your account" in text
    assert "new@example.com" not in text and RECOVERY not in text


def test_a_changed_address_is_not_told_with_notifications_off(svc: Services) -> None:
    from domain import audit, notify

    org_id, user_id = person(svc, notify=False)
    with svc.unit_of_work() as uow:
        event = audit.append(
            uow, org_id, EventType.USER_CREATED, "success", audit.CLI, user_id="alice"
        )
        notify.address_changed(uow, event, "recovery_email", "old@example.com")
    assert mails_of(svc, user_id) == []


def test_sent_and_failed_mails_are_counted(services: Services) -> None:
    from prometheus_client import REGISTRY

    def sample(outcome: str) -> float:
        return REGISTRY.get_sample_value("mfa_mails_total", {"outcome": outcome}) or 0.0

    before = {o: sample(o) for o in ("sent", "retry", "failed")}
    org_id, user_id = person(services)
    append(services, org_id, EventType.CODES_REVOKED, {"count": 1})
    with smtp_server() as server:
        server.inbox.refuse = True
        assert send_all(services, smtp_of(server), user_id) == [RETRY, RETRY]
        server.inbox.refuse = False
        later = utcnow() + timedelta(hours=1)
        assert send_all(services, smtp_of(server), user_id, at(later)) == [SENT, SENT]
    assert sample("retry") - before["retry"] == 2
    assert sample("sent") - before["sent"] == 2
    assert sample("failed") == before["failed"]


def test_the_purge_removes_finished_mails_and_expired_tickets_only(svc: Services) -> None:
    from domain import purge
    from domain.models import RepudiationTicket

    org_id, user_id = person(svc, recovery=None)
    append(svc, org_id, EventType.CODES_REVOKED, {"count": 1})
    append(svc, org_id, EventType.MFA_RESET)
    done, waiting = mails_of(svc, user_id)
    with smtp_server() as server:
        assert send_one(svc, smtp_of(server), done.id) == SENT
    retention = timedelta(seconds=svc.settings.outbox_retention_seconds)
    soon = utcnow() + retention + timedelta(minutes=1)
    purge.purge(svc, soon)
    assert [m.id for m in mails_of(svc, user_id)] == [waiting.id]  # pending stays
    with svc.unit_of_work() as uow:
        # The sent mail's ticket is still valid (7 days), so it stays too.
        assert len(uow.session.execute(select(RepudiationTicket)).all()) >= 1
    purge.purge(svc, utcnow() + timedelta(days=7) + retention + timedelta(minutes=1))
    with svc.unit_of_work() as uow:
        left = uow.session.execute(
            select(RepudiationTicket).where(RepudiationTicket.user_id == user_id)
        ).all()
    assert left == []
