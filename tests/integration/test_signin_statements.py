"""What one backup-code sign-in sends to the database, on SQLite and PostgreSQL: the
hot path's statements counted (bench/bench_signin_load.py measures what they cost),
so that a re-read or a per-statement ORM detour cannot creep back unnoticed.

Counted at the cursor, for the use case alone (the token lookup is the API's), and
without SQLite's BEGIN IMMEDIATE (PostgreSQL's BEGIN is not a cursor statement)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, func, select

from domain import audit, limits
from domain.clock import utcnow
from domain.models import AuditHead, WebhookDelivery
from domain.notify import webhook_admin
from domain.notify.webhook_addresses import AllowPrivate
from infra.services import Services
from tests.integration.codes_fixtures import verify
from tests.support.builders import NOW, holder
from tests.support.codes import wrong_secret


@contextmanager
def statements(svc: Services) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.strip().upper() != "BEGIN IMMEDIATE":
            seen.append(" ".join(statement.split()))

    event.listen(svc.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(svc.engine, "before_cursor_execute", note)


def _kind(statement: str) -> str:
    """A statement by its verb and its own table (not a subquery's), e.g. "INSERT
    auth_failures"; one with a data-modifying WITH as both, e.g. "INSERT audit_events
    + UPDATE audit_heads"."""
    words = statement.split()
    if words[0].upper() == "WITH":  # WITH name AS ( ... ) main statement
        depth, at = 0, 3
        for at in range(3, len(words)):
            depth += words[at].count("(") - words[at].count(")")
            if depth == 0:
                break
        inner = " ".join(words[3 : at + 1]).strip()[1:-1]
        return f"{_kind(' '.join(words[at + 1 :]))} + {_kind(inner)}"
    verb = words[0].upper()
    after = {"SELECT": "FROM", "INSERT": "INTO", "UPDATE": "UPDATE", "DELETE": "FROM"}[verb]
    depth, top = 0, []
    for word in words:
        if depth == 0:
            top.append(word)
        depth += word.count("(") - word.count(")")
    upper = [w.upper() for w in top]
    return f"{verb} {top[upper.index(after) + 1]}"


def _kinds(sent: list[str]) -> list[str]:
    return [_kind(s) for s in sent]


def _audit(svc: Services) -> list[str]:
    """An append: the head read with its lock, then the event's INSERT, which moves
    the head in the same statement on PostgreSQL."""
    if svc.engine.dialect.name == "postgresql":
        return ["SELECT audit_heads", "INSERT audit_events + UPDATE audit_heads"]
    return ["SELECT audit_heads", "INSERT audit_events", "UPDATE audit_heads"]


def _failure(svc: Services, state: str) -> list[str]:
    """A counted failure: its row and the user's attempt limits (`state`: their write,
    INSERT the first time), in one statement on PostgreSQL."""
    if svc.engine.dialect.name == "postgresql":
        return [f"{state} attempt_limits + INSERT auth_failures"]
    return ["INSERT auth_failures", f"{state} attempt_limits"]


# The projections of a code's event (domain.notify): for an accepted code its user's
# mail; the webhooks are looked up only when the chain head (read with its lock in
# the append) counts any (the organizations of these tests have none).
MAIL = ["SELECT users"]  # joined to its organization


def test_a_mistyped_input_costs_one_read_and_one_insert_then_its_minutes_event(
    svc: Services,
) -> None:
    h = holder(svc)
    with statements(svc) as first:
        assert verify(svc, h, "ABCD-EFGH", NOW).mistyped
    with statements(svc) as second:
        assert verify(svc, h, "ABCD-EFGH", NOW + timedelta(seconds=5)).mistyped
    # the first of a source is audited (and prunes the source's old rows)
    assert _kinds(first) == [
        "SELECT users",
        "INSERT auth_failures",
        "DELETE auth_failures",
        *_audit(svc),
    ]
    assert _kinds(second) == ["SELECT users", "INSERT auth_failures"]


def test_a_wrong_code_reads_once_before_the_hash_and_once_under_the_lock(svc: Services) -> None:
    h = holder(svc)
    with statements(svc) as sent:
        result = verify(svc, h, wrong_secret(h.codes[0]), NOW)
    assert not result.accepted and not result.mistyped
    assert _kinds(sent) == [
        "SELECT users",  # user, policy, enrollment, limits, source, candidate row
        "SELECT users",  # the lock
        "SELECT users",  # the limits read again under it (joined to the user's row)
        *_audit(svc),
        *_failure(svc, "INSERT"),
    ]
    if svc.engine.dialect.name == "postgresql":
        assert "FOR UPDATE" in sent[1].upper() and "FOR UPDATE" not in sent[2].upper()
        assert "attempt_limits" in sent[2]


def test_a_right_code_after_a_failure_spends_resets_and_audits(svc: Services) -> None:
    h = holder(svc)
    verify(svc, h, wrong_secret(h.codes[0]), NOW)  # same source: a failure to clear
    with statements(svc) as sent:
        result = verify(svc, h, h.codes[1], NOW + timedelta(seconds=1))
    assert result.accepted and result.remaining == 4
    assert _kinds(sent) == [
        "SELECT users",
        "SELECT users",
        "SELECT users",
        "UPDATE backup_codes",  # the conditional spend
        "UPDATE attempt_limits",  # the consecutive count reset
        "DELETE auth_failures",  # the source's failures
        *_audit(svc),
        *MAIL,
    ]
    with statements(svc) as clean:
        assert verify(
            svc, h, h.codes[2], NOW + timedelta(seconds=2), client_ip="192.0.2.7"
        ).accepted
    # nothing to reset and no failure of that source: neither write is sent
    assert _kinds(clean) == [
        "SELECT users",
        "SELECT users",
        "SELECT users",
        "UPDATE backup_codes",
        *_audit(svc),
        *MAIL,
    ]
    assert timedelta(seconds=2) < limits.KEEP_ROWS  # no old row to prune in between


def _make_webhook(svc: Services, org_id: str) -> str:
    with svc.unit_of_work() as uow:
        hook, _ = webhook_admin.create(
            uow,
            svc.box,
            org_id,
            "http://127.0.0.1:9/hooks",
            ["backup_codes.*"],
            "test",
            AllowPrivate.LOOPBACK,
            audit.CLI,
            utcnow(),
        )
        return hook.id


def _head_webhooks(svc: Services, org_id: str) -> int:
    with svc.unit_of_work() as uow:
        head = uow.session.get(AuditHead, org_id)
        assert head is not None
        return head.webhooks


def test_an_organization_with_a_webhook_looks_it_up_and_queues_the_delivery(
    svc: Services,
) -> None:
    h = holder(svc)
    first, second = _make_webhook(svc, h.org_id), _make_webhook(svc, h.org_id)
    assert _head_webhooks(svc, h.org_id) == 2
    with statements(svc) as sent:
        assert not verify(svc, h, wrong_secret(h.codes[0]), NOW).accepted
    kinds = _kinds(sent)
    audit_ends = 3 + len(_audit(svc))
    assert kinds[3:audit_ends] == _audit(svc)
    assert kinds[audit_ends] == "SELECT webhooks"  # then a delivery for each of the two
    assert kinds.count("INSERT webhook_deliveries") == 2
    with svc.unit_of_work() as uow:
        webhook_admin.delete(uow, h.org_id, first, audit.CLI)
    assert _head_webhooks(svc, h.org_id) == 1
    with svc.unit_of_work() as uow:
        webhook_admin.delete(uow, h.org_id, second, audit.CLI)
    assert _head_webhooks(svc, h.org_id) == 0
    with statements(svc) as after:
        assert not verify(svc, h, wrong_secret(h.codes[0]), NOW + timedelta(seconds=1)).accepted
    assert "SELECT webhooks" not in _kinds(after)
    with svc.unit_of_work() as uow:
        queued = uow.session.execute(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.webhook_id.in_([first, second]))
        ).scalar_one()
    # A deleted webhook's deliveries go with it (only this test's: on PostgreSQL the
    # database is shared by the session's tests).
    assert queued == 0
