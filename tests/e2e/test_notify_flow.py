"""Notifications end to end: `mfa-codes run` (gunicorn, the regeneration worker and
the delivery worker as processes) with mail going to a real SMTP server and two
webhooks to a real receiver, both started here on 127.0.0.1.

enroll -> first sheet -> sign in with a code -> regenerate -> admin revoke, all over
plain HTTP. Each address gets exactly one mail of each kind the flow causes (its own
Message-ID, never naming the other address); each webhook gets exactly the flow's
events, each signature verified with the standardwebhooks library, in the flow's
order by audit_seq; once every delivery has settled nothing else arrives; no code,
TOTP value, secret or token is in any mail part or webhook body.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyotp
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from domain.notify.mail_rules import MailKind
from domain.notify.mail_texts import SUBJECTS
from tests.e2e.service import Service, running
from tests.support.codes import CODE_RE
from tests.support.leaks import leaked
from tests.support.polling import await_true
from tests.support.receiver import Received, receiver
from tests.support.smtp import parts, smtp_server

pytestmark = pytest.mark.slow

PRIMARY, RECOVERY = "alice.primary@example.org", "alice.recovery@example.net"
WEBHOOK_EVENTS = [
    "mfa.enrolled",
    "backup_codes.generated",  # the first set, queued by the enrollment
    "backup_codes.used",
    "backup_codes.generated",
    "backup_codes.revoked",
]
MAIL_KINDS = [
    MailKind.ENROLLED,
    MailKind.CODES_GENERATED,
    MailKind.CODE_USED,
    MailKind.CODES_GENERATED,
    MailKind.CODES_REVOKED,
]


def _settled(svc: Service, admin: str, hook_ids: list[str], each: int) -> bool:
    for hook_id in hook_ids:
        got = svc.call("GET", f"/v1/org/webhooks/{hook_id}/deliveries?limit=1000", admin)
        assert got.status == 200, got.body
        statuses = [d["status"] for d in got.json()["deliveries"]]
        if len(statuses) != each or set(statuses) != {"succeeded"}:
            return False
    return True


def _mails_settled(svc: Service, auditor: str, count: int) -> bool:
    got = svc.call("GET", "/v1/audit/events?type=notification.sent&limit=1000", auditor)
    assert got.status == 200, got.body
    return len(got.json()["events"]) >= count


@pytest.mark.timeout(240)
def test_a_whole_flow_mails_each_address_once_and_signs_every_webhook(tmp_path: Path) -> None:
    with (
        smtp_server() as smtp,
        receiver() as rx,
        running(
            tmp_path,
            {
                "MFA_SMTP_URL": smtp.url,
                "MFA_MAIL_FROM": "security@mfa.example",
                # No checkpoint during the test: it would be a webhook of its own.
                "MFA_CHECKPOINT_INTERVAL_SECONDS": "86400",
            },
        ) as svc,
    ):
        svc.cli("org", "create", "acme")
        admin = svc.issue_token("acme", "root", "admin")
        front = svc.issue_token("acme", "front", "service")
        auditor = svc.issue_token("acme", "audit", "auditor")

        secrets: dict[str, str] = {}  # the receiver's path -> that webhook's secret
        hook_ids: list[str] = []
        for name in ("a", "b"):
            made = svc.call(
                "POST", "/v1/org/webhooks", admin, {"url": f"{rx.url}/{name}", "events": ["*"]}
            )
            assert made.status == 201, made.body
            secrets[f"/hook/{name}"] = made.json()["secret"]
            hook_ids.append(made.json()["id"])
        svc.seen.update(secrets.values())

        created = svc.call(
            "PUT", "/v1/users/alice", front, {"email": PRIMARY, "recovery_email": RECOVERY}
        )
        assert created.status == 201, created.body
        issued = svc.call("POST", "/v1/users/alice/tokens", front, {})
        assert issued.status == 201, issued.body
        user = issued.json()["token"]
        svc.seen.add(user)

        started = svc.call("POST", "/v1/me/mfa/enrollment", user)
        assert started.status == 201, started.body
        totp = pyotp.TOTP(started.json()["secret"])
        svc.seen.add(started.json()["secret"])
        confirm = totp.now()
        confirmed = svc.call("POST", "/v1/me/mfa/enrollment/confirm", user, {"totp": confirm})
        assert confirmed.status == 201, confirmed.body
        svc.seen.add(confirm)
        first = confirmed.json()["regeneration"]
        assert svc.await_finished(user, first["id"])["status"] == "ready"

        sheet = svc.call("GET", first["links"]["sheet"], user, accept="text/plain")
        assert sheet.status == 200, sheet.body
        codes = CODE_RE.findall(sheet.body.decode())
        assert len(codes) == 5
        svc.seen.update(codes)
        used = svc.call(
            "POST",
            "/v1/users/alice/backup-codes/verify",
            front,
            {"code": codes[0], "client_ip": "203.0.113.50", "user_agent": "Lynx/2"},
        )
        assert used.status == 200 and used.json()["accepted"] is True, used.body

        again_totp = totp.at(time.time() + 30)  # the next step: the last one is spent
        svc.seen.add(again_totp)
        again = svc.call("POST", "/v1/me/backup-codes/regenerations", user, {"totp": again_totp})
        assert again.status == 202, again.body
        assert svc.await_finished(user, again.json()["id"])["status"] == "ready"
        second = svc.call("GET", again.json()["links"]["sheet"], user, accept="text/plain")
        assert second.status == 200, second.body
        svc.seen.update(CODE_RE.findall(second.body.decode()))

        revoked = svc.call("POST", "/v1/users/alice/backup-codes/revocation", admin)
        assert revoked.status == 204, revoked.body

        await_true(
            lambda: _settled(svc, admin, hook_ids, len(WEBHOOK_EVENTS)), 90, "webhooks delivered"
        )
        mail_count = 2 * len(MAIL_KINDS)
        await_true(lambda: _mails_settled(svc, auditor, mail_count), 90, "mails sent")
        # Settled: every delivery succeeded and every mail is sent, so nothing is left
        # to retry; what arrived now is all that will.
        requests: list[Received] = rx.requests()
        messages = list(smtp.inbox.messages)
        assert len(requests) == 2 * len(WEBHOOK_EVENTS)
        assert len(messages) == mail_count
        assert _mails_settled(svc, auditor, mail_count)
        log = svc.log.read_text()

    # --- webhooks: each verified with its own secret, the flow's events in order ----------
    by_path: dict[str, list[dict[str, Any]]] = {"/hook/a": [], "/hook/b": []}
    for got in requests:
        body = StandardWebhook(secrets[got.path]).verify(got.body, got.headers)
        assert got.headers["webhook-id"] == body["data"]["audit_event_id"]
        by_path[got.path].append(body)
    sequences = []
    for bodies in by_path.values():
        ordered = sorted(bodies, key=lambda b: b["data"]["audit_seq"])
        assert [b["type"] for b in ordered] == WEBHOOK_EVENTS
        assert all(b["data"]["org"] == "acme" and b["data"]["user_id"] == "alice" for b in bodies)
        assert [b["data"]["remaining"] for b in ordered if b["type"] == "backup_codes.used"] == [4]
        sequences.append([b["data"]["audit_seq"] for b in ordered])
    assert sequences[0] == sequences[1] and len(set(sequences[0])) == len(WEBHOOK_EVENTS)

    # --- mails: one of each kind to each address, alone, with its own Message-ID ----------
    expected_subjects = Counter(SUBJECTS[kind] for kind in MAIL_KINDS)
    for address, other in ((PRIMARY, RECOVERY), (RECOVERY, PRIMARY)):
        mine = [m for m in messages if m.rcpt_tos == (address,)]
        assert Counter(str(m.message["Subject"]) for m in mine) == expected_subjects
        for m in mine:
            assert str(m.message["To"]) == address
            assert m.message["From"] == "security@mfa.example"
            assert other not in "\n".join(parts(m.message))
            assert m.message.get_body(("plain",)) is not None
            assert m.message.get_body(("html",)) is not None
    ids = [str(m.message["Message-ID"]) for m in messages]
    assert len(set(ids)) == len(ids) == mail_count
    (used_mail,) = [
        m
        for m in messages
        if m.rcpt_tos == (PRIMARY,) and m.message["Subject"] == SUBJECTS[MailKind.CODE_USED]
    ]
    used_text = "\n".join(parts(used_mail.message))
    assert "203.0.113.50" in used_text and "Lynx/2" in used_text
    assert "4 backup codes remain" in used_text

    # --- the leak hunt: every decoded part of every mail, every webhook body --------------
    for m in messages:
        assert leaked("\n".join(parts(m.message)), svc.seen) == []
    for got in requests:
        assert leaked(got.body.decode(), svc.seen) == []
    assert PRIMARY not in log and RECOVERY not in log
    assert leaked(log, svc.seen) == []
