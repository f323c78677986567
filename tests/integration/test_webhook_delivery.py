"""Webhook deliveries end to end in one process: the projection inserts them with the
event, the real client POSTs them to a real receiver on 127.0.0.1 that verifies every
signature with the standardwebhooks library, and the outcome is recorded (retries,
410, Retry-After, rotation, the schedule running out, a killed attempt's lease)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text
from standardwebhooks.webhooks import Webhook as StandardWebhook

from domain import admin, audit
from domain.audit.checkpoints import write_checkpoints
from domain.clock import utcnow
from domain.models import AuditEvent, Webhook, WebhookDelivery
from domain.notify import webhook_admin, webhook_delivery
from domain.notify.webhook_addresses import AllowPrivate
from infra.services import Services
from infra.webhook_client import WebhookClient
from tests.support.builders import new_org
from tests.support.receiver import Receiver, Reply, receiver
from workers.deliveries import deliver_once

CLIENT = WebhookClient(AllowPrivate.LOOPBACK, total_seconds=5)


def make_webhook(
    svc: Services, org_id: str, url: str, events: list[str] | None = None
) -> tuple[str, str]:
    with svc.unit_of_work() as uow:
        hook, secret = webhook_admin.create(
            uow,
            svc.box,
            org_id,
            url,
            events or ["*"],
            "test",
            AllowPrivate.LOOPBACK,
            audit.CLI,
            utcnow(),
        )
        return hook.id, secret


def change_policy(svc: Services, org_id: str, code_count: int = 6) -> None:
    with svc.unit_of_work() as uow:
        admin.put_policy(uow, org_id, True, code_count, audit.CLI)


def deliveries(svc: Services, webhook_id: str) -> list[WebhookDelivery]:
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.id)
        ).scalars()
        found = list(rows)
        uow.session.expunge_all()
        return found


def deliver_all(svc: Services, webhook_id: str, client: WebhookClient = CLIENT) -> list[str]:
    outcomes = []
    for row in deliveries(svc, webhook_id):
        recorded = deliver_once(svc, client, row.id)
        outcomes.append(recorded.outcome if recorded else "skipped")
    return outcomes


def verified(rx: Receiver, *secrets: str) -> list[dict[str, object]]:
    """Every request's body, each signature checked with every secret given."""
    bodies = []
    for got in rx.requests():
        for secret in secrets:
            bodies.append(StandardWebhook(secret).verify(got.body, got.headers))
    return bodies


def test_an_event_is_delivered_signed_with_its_audit_fields(svc: Services) -> None:
    org_id = new_org(svc)
    with receiver() as rx:
        hook_id, secret = make_webhook(svc, org_id, rx.url)
        change_policy(svc, org_id)
        assert deliver_all(svc, hook_id) == ["succeeded"]
        (body,) = verified(rx, secret)
        with svc.unit_of_work() as uow:
            ev = uow.session.execute(
                select(AuditEvent).where(
                    AuditEvent.org_id == org_id, AuditEvent.type == "org.policy.changed"
                )
            ).scalar_one()
            assert rx.requests()[0].headers["webhook-id"] == ev.id
            assert body["type"] == "policy.changed"
            data = body["data"]
            assert isinstance(data, dict)
            assert (data["org"], data["audit_event_id"], data["audit_seq"]) == (
                org_id,
                ev.id,
                ev.seq,
            )
            assert data["new"] == {
                "backup_codes_enabled": True,
                "code_count": 6,
                "notify_users": True,
                "support_contact": None,
            }
            assert data["new"] == ev.details["new"]
        got = rx.requests()[0]
        assert got.headers["content-type"] == "application/json"
        assert int(got.headers["content-length"]) == len(got.body)
        (row,) = deliveries(svc, hook_id)
        assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 1, 200)


def test_a_webhook_hears_only_what_comes_after_it_and_what_it_asked_for(svc: Services) -> None:
    org_id = new_org(svc)
    change_policy(svc, org_id, 7)  # before any webhook
    with receiver() as rx:
        every, _ = make_webhook(svc, org_id, rx.url)
        other, _ = make_webhook(svc, org_id, rx.url, ["backup_codes.*"])
        change_policy(svc, org_id, 8)
        assert [d.type for d in deliveries(svc, every)] == ["policy.changed"]
        assert deliveries(svc, other) == []


def test_a_rolled_back_event_leaves_no_delivery(svc: Services) -> None:
    org_id = new_org(svc)
    hook_id, _ = make_webhook(svc, org_id, "http://127.0.0.1:9/never")
    with pytest.raises(RuntimeError), svc.unit_of_work() as uow:
        admin.put_policy(uow, org_id, True, 9, audit.CLI)
        raise RuntimeError("rolled back")
    assert deliveries(svc, hook_id) == []


def test_500_then_200_is_delivered_twice_and_ends_succeeded(svc: Services) -> None:
    svc.settings = svc.settings.with_overrides(webhook_retry_schedule=(0, 0))
    org_id = new_org(svc)
    with receiver(Reply(500), Reply(200)) as rx:
        hook_id, secret = make_webhook(svc, org_id, rx.url)
        change_policy(svc, org_id)
        assert deliver_all(svc, hook_id) == ["retry"]
        (row,) = deliveries(svc, hook_id)
        assert (row.status, row.last_status_code, row.last_error) == (
            "pending",
            500,
            "answered 500",
        )
        assert deliver_all(svc, hook_id) == ["succeeded"]
        (row,) = deliveries(svc, hook_id)
        assert (row.status, row.attempts, row.last_error) == ("succeeded", 2, None)
        first, second = rx.requests()
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert first.body == second.body
        assert len(verified(rx, secret)) == 2


def test_the_schedule_runs_out_then_dead(svc: Services) -> None:
    svc.settings = svc.settings.with_overrides(webhook_retry_schedule=(0,))
    org_id = new_org(svc)
    with receiver(Reply(500)) as rx:
        hook_id, _ = make_webhook(svc, org_id, rx.url)
        change_policy(svc, org_id)
        assert deliver_all(svc, hook_id) == ["retry"]
        assert deliver_all(svc, hook_id) == ["dead"]
        assert deliver_all(svc, hook_id) == ["skipped"]
        assert len(rx.requests()) == 2


def test_410_disables_the_webhook_and_kills_its_pending_deliveries(svc: Services) -> None:
    org_id = new_org(svc)
    with receiver(Reply(410)) as rx:
        hook_id, _ = make_webhook(svc, org_id, rx.url)
        change_policy(svc, org_id, 6)
        change_policy(svc, org_id, 7)
        first, second = deliveries(svc, hook_id)
        assert deliver_once(svc, CLIENT, first.id).outcome == "disabled"  # type: ignore[union-attr]
        assert deliver_once(svc, CLIENT, second.id) is None
        assert [d.status for d in deliveries(svc, hook_id)] == ["dead", "dead"]
        assert len(rx.requests()) == 1
        with svc.unit_of_work() as uow:
            hook = uow.session.get(Webhook, hook_id)
            assert hook is not None and not hook.enabled
            assert hook.disabled_reason == webhook_delivery.DISABLED_BY_GONE
            disabled = uow.session.execute(
                select(AuditEvent).where(
                    AuditEvent.org_id == org_id, AuditEvent.type == "webhook.disabled"
                )
            ).scalar_one()
            assert disabled.details["webhook_id"] == hook_id
        change_policy(svc, org_id, 8)  # a disabled webhook hears nothing more
        assert len(deliveries(svc, hook_id)) == 2


def test_retry_after_is_honoured(svc: Services) -> None:
    org_id = new_org(svc)
    with receiver(Reply(503, headers=(("Retry-After", "600"),))) as rx:
        hook_id, _ = make_webhook(svc, org_id, rx.url)
        change_policy(svc, org_id)
        before = utcnow()
        assert deliver_all(svc, hook_id) == ["retry"]
        (row,) = deliveries(svc, hook_id)
        assert row.next_attempt_at is not None
        assert row.next_attempt_at >= before + timedelta(seconds=600)
        assert deliver_all(svc, hook_id) == ["skipped"]  # not due yet
        assert len(rx.requests()) == 1


def test_both_secrets_sign_during_a_rotation(svc: Services) -> None:
    org_id = new_org(svc)
    with receiver() as rx:
        hook_id, old = make_webhook(svc, org_id, rx.url)
        with svc.unit_of_work() as uow:
            new = webhook_admin.rotate_secret(uow, svc.box, org_id, hook_id, audit.CLI, utcnow())
        assert new != old
        change_policy(svc, org_id)
        assert deliver_all(svc, hook_id) == ["succeeded"]
        assert len(rx.requests()[0].headers["webhook-signature"].split(" ")) == 2
        assert len(verified(rx, old, new)) == 2
        # After the overlap only the new secret signs.
        with svc.unit_of_work() as uow:
            hook = uow.session.get(Webhook, hook_id)
            assert hook is not None
            hook.previous_secret_expires_at = utcnow() - timedelta(seconds=1)
        change_policy(svc, org_id, 7)
        assert deliver_all(svc, hook_id)[-1] == "succeeded"
        last = rx.requests()[-1]
        assert len(last.headers["webhook-signature"].split(" ")) == 1
        StandardWebhook(new).verify(last.body, last.headers)
        with pytest.raises(Exception, match="No matching signature"):
            StandardWebhook(old).verify(last.body, last.headers)


def test_a_killed_attempt_is_due_again_once_its_lease_passes(svc: Services) -> None:
    org_id = new_org(svc)
    hook_id, _ = make_webhook(svc, org_id, "http://127.0.0.1:9/never")
    change_policy(svc, org_id)
    (row,) = deliveries(svc, hook_id)
    now = utcnow()
    with svc.unit_of_work() as uow:
        assert webhook_delivery.claim(uow, svc.box, row.id, now) is not None
    # The worker died here. Nobody else takes it while the lease runs...
    with svc.unit_of_work() as uow:
        assert webhook_delivery.claim(uow, svc.box, row.id, now) is None
        # (Other tests' deliveries may share the database: only this one is looked at.)
        assert row.id not in webhook_delivery.due_deliveries(uow, now + timedelta(seconds=5), 5)
    # ...then the sweep finds it and the next claim is attempt 2.
    later = now + timedelta(seconds=webhook_delivery.LEASE_SECONDS + 1)
    with svc.unit_of_work() as uow:
        assert row.id in webhook_delivery.due_deliveries(uow, later, 5)
    with svc.unit_of_work() as uow:
        again = webhook_delivery.claim(uow, svc.box, row.id, later)
        assert again is not None and again.number == 2


def test_a_checkpoint_goes_out_as_audit_checkpoint(svc: Services) -> None:
    org_id = new_org(svc)
    with receiver() as rx:
        hook_id, secret = make_webhook(svc, org_id, rx.url, ["audit.*"])
        with svc.unit_of_work() as uow:
            assert write_checkpoints(uow, svc.settings, utcnow()) >= 1
        assert deliver_all(svc, hook_id) == ["succeeded"]
        (body,) = verified(rx, secret)
        data = body["data"]
        assert isinstance(data, dict)
        assert body["type"] == "audit.checkpoint" and data["audit_event_id"] is None
        assert rx.requests()[0].headers["webhook-id"] == f"checkpoint.{org_id}.{data['seq']}"
        assert set(data) >= {"seq", "hash", "signature", "key_id"}


def test_a_late_answer_is_not_recorded_over_a_newer_attempt(svc: Services) -> None:
    org_id = new_org(svc)
    hook_id, _ = make_webhook(svc, org_id, "http://127.0.0.1:9/slow")
    change_policy(svc, org_id)
    (row,) = deliveries(svc, hook_id)
    now = utcnow()
    later = now + timedelta(seconds=webhook_delivery.LEASE_SECONDS + 1)
    with svc.unit_of_work() as uow:
        first = webhook_delivery.claim(uow, svc.box, row.id, now)
    with svc.unit_of_work() as uow:  # the first attempt's lease ran out: taken again
        second = webhook_delivery.claim(uow, svc.box, row.id, later)
    assert first is not None and second is not None and second.number == 2
    schedule = (5, 5, 5)
    with svc.unit_of_work() as uow:
        late = webhook_delivery.record(uow, first, webhook_delivery.Answer(200), later, schedule)
        gone = webhook_delivery.record(uow, first, webhook_delivery.Answer(410), later, schedule)
    assert (late.outcome, gone.outcome) == ("stale", "stale")
    with svc.unit_of_work() as uow:
        newer = webhook_delivery.record(uow, second, webhook_delivery.Answer(500), later, schedule)
    assert newer.outcome == "retry"
    (after,) = deliveries(svc, hook_id)
    assert after.status == "pending" and after.attempts == 2 and after.last_status_code == 500
    with svc.unit_of_work() as uow:
        hook = uow.session.get(Webhook, hook_id)
        assert hook is not None and hook.enabled  # the stale 410 disabled nothing


def test_of_two_workers_claiming_at_once_one_gets_the_attempt(svc: Services) -> None:
    org_id = new_org(svc)
    hook_id, _ = make_webhook(svc, org_id, "http://127.0.0.1:9/race")
    change_policy(svc, org_id)
    (row,) = deliveries(svc, hook_id)
    now = utcnow()
    start = threading.Barrier(2)

    def take() -> webhook_delivery.Attempt | None:
        start.wait(10)
        with svc.unit_of_work() as uow:
            return webhook_delivery.claim(uow, svc.box, row.id, now)

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda _: take(), range(2)))
    assert sorted(a is None for a in got) == [False, True]
    (after,) = deliveries(svc, hook_id)
    assert after.attempts == 1


ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"


@contextmanager
def statements_sent(svc: Services) -> Iterator[list[str]]:
    """What reaches the driver's cursors (the worker's prebuilt statements run on
    psycopg's own cursor, unseen by SQLAlchemy's events): a spy, the call goes on."""
    sent: list[str] = []
    real = psycopg.Cursor.execute

    def spied(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return real(cursor, query, *args, **kwargs)

    psycopg.Cursor.execute = spied  # type: ignore[assignment,method-assign]
    try:
        yield sent
    finally:
        psycopg.Cursor.execute = real  # type: ignore[method-assign]


@pytest.mark.postgres
def test_only_the_workers_claim_and_record_skip_the_wal_flush(pg_services: Services) -> None:
    svc = pg_services
    org_id = new_org(svc)
    with receiver(Reply(204), Reply(410)) as rx:
        hook_id, _ = make_webhook(svc, org_id, rx.url)
        for code_count in (6, 7, 8):
            change_policy(svc, org_id, code_count)
        in_uow, first, second = deliveries(svc, hook_id)
        # In a unit of work (which may carry other writes) a claim stays durable.
        with statements_sent(svc) as sent, svc.unit_of_work() as uow:
            assert webhook_delivery.claim(uow, svc.box, in_uow.id, utcnow()) is not None
            assert uow.session.execute(text("SHOW synchronous_commit")).scalar() == "on"
        assert sent and not any(ASYNC_COMMIT in s for s in sent)
        with statements_sent(svc) as sent:
            assert deliver_once(svc, CLIENT, first.id).outcome == "succeeded"  # type: ignore[union-attr]
        # The worker's claim and record, each its own autocommit statement: asynchronous.
        assert [ASYNC_COMMIT in s for s in sent] == [True, True]
        with statements_sent(svc) as sent:
            assert deliver_once(svc, CLIENT, second.id).outcome == "disabled"  # type: ignore[union-attr]
        # The 410 disables the webhook and audits it: that transaction stays durable.
        claim, *rest = sent
        assert ASYNC_COMMIT in claim and not any(ASYNC_COMMIT in s for s in rest)
        assert any("INSERT INTO audit_events" in s for s in rest)
    # SET LOCAL: the setting ended with each statement's transaction, on every
    # connection the pool hands out.
    for _ in range(3):
        with svc.engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
