"""One delivery attempt: claim the row, sign, send (through a port), record the answer.

The attempt is claimed by one conditional UPDATE (attempts + 1, and
`next_attempt_at` moved to the end of a lease), the POST happens outside any
transaction, and the answer is recorded by another UPDATE (a 410, which also
disables the webhook and audits it, in a transaction). A worker killed mid-attempt
leaves the row pending: once the lease passes it is due again and the sweep sends
it (a receiver de-duplicates by `webhook-id`). A late answer from an attempt whose
lease ran out and was claimed again is not recorded over the newer one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Update,
    bindparam,
    literal_column,
    or_,
    select,
    update,
)

from domain import audit, sql
from domain.audit.types import EventType, Outcome
from domain.crypto import SecretBox
from domain.models import DeliveryStatus, Webhook, WebhookDelivery
from domain.notify import signing
from domain.sql import rowcount
from domain.uow import UnitOfWork

# After a failed attempt: wait this long (seconds) before the next; then dead.
DEFAULT_SCHEDULE: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_RETRY_AFTER_SECONDS = 86400
# Longer than the client's whole 10 s budget: only a dead worker's claim outlives it.
LEASE_SECONDS = 30
GONE = 410
HONOURS_RETRY_AFTER = frozenset({429, 503})
DISABLED_BY_GONE = "the receiver answered 410 Gone"


@dataclass(frozen=True)
class Attempt:
    """What one attempt sends; `secrets` are plaintext and must never be logged."""

    delivery_id: int
    webhook_id: str
    url: str
    message_id: str
    body: bytes
    number: int
    secrets: tuple[str, ...] = field(repr=False)

    def headers(self, timestamp: int) -> dict[str, str]:
        return signing.headers(self.message_id, self.body, self.secrets, timestamp)


@dataclass(frozen=True)
class Answer:
    """What the receiver said: a status, or an error without one (refused, timed out)."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


Send = Callable[[Attempt], Answer]


def secrets_in_use(box: SecretBox, webhook: Webhook, now: datetime) -> tuple[str, ...]:
    """The current secret, and the previous one while its overlap lasts."""
    return _secrets(
        box,
        webhook.secret_ciphertext,
        webhook.previous_secret_ciphertext,
        webhook.previous_secret_expires_at,
        now,
    )


def _secrets(
    box: SecretBox,
    current: bytes,
    previous: bytes | None,
    previous_expires: datetime | None,
    now: datetime,
) -> tuple[str, ...]:
    # Remembered: decrypting was a sixth of an attempt's CPU, for the same few secrets.
    found = [box.decrypt_text_remembered(current)]
    if previous is not None and previous_expires is not None and previous_expires > now:
        found.append(box.decrypt_text_remembered(previous))
    return tuple(found)


_WEBHOOK_FIELDS = (
    Webhook.url,
    Webhook.secret_ciphertext,
    Webhook.previous_secret_ciphertext,
    Webhook.previous_secret_expires_at,
)


def claim(uow: UnitOfWork, box: SecretBox, delivery_id: int, now: datetime) -> Attempt | None:
    """Take a due, pending delivery of an enabled webhook for one attempt; None when
    there is nothing to do (done, dead, not due, claimed by another, paused)."""
    return claim_in(uow.session.connection(), box, delivery_id, now)


# SET LOCAL synchronous_commit = off, as part of the UPDATE itself (set_config with
# is_local true is that SET LOCAL): an uncorrelated subquery in the WHERE, evaluated
# before any row can pass it, so the statement's own transaction commits without
# waiting for the WAL flush and the setting ends with it. Only for the claim and the
# record run in autocommit, where the statement is the whole transaction
# (_asynchronous_commit): a claim lost in a crash is tried again after its lease,
# a lost record is a redelivery that receivers de-duplicate by webhook-id
# (at-least-once, as the contract says). A 410's disabling with its audit event,
# and everything else, commit durably.
_WITHOUT_WAL_WAIT = (
    select(literal_column("set_config('synchronous_commit', 'off', true)"))
    .scalar_subquery()
    .is_not(None)
)


def _asynchronous(statement: Update) -> Update:
    return statement.where(_WITHOUT_WAL_WAIT)


def _asynchronous_commit(conn: Connection) -> bool:
    """The statement is its own transaction, on PostgreSQL: nothing else rides on
    its commit, so it may skip the WAL flush."""
    autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    return autocommit and conn.dialect.name == "postgresql"


def _claim_statement(postgres: bool) -> Update:
    now = bindparam("now", type_=WebhookDelivery.next_attempt_at.type)
    claimed = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == bindparam("delivery_id"),
            WebhookDelivery.status == DeliveryStatus.PENDING,
            or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            last_attempt_at=now,
            next_attempt_at=bindparam("lease_end", type_=WebhookDelivery.next_attempt_at.type),
        )
        .returning(
            WebhookDelivery.webhook_id,
            WebhookDelivery.message_id,
            WebhookDelivery.payload,
            WebhookDelivery.attempts,
        )
    )
    if postgres:  # UPDATE ... FROM webhooks: the webhook's fields come back in the same trip
        return claimed.where(
            Webhook.id == WebhookDelivery.webhook_id, Webhook.enabled.is_(True)
        ).returning(*_WEBHOOK_FIELDS)
    # SQLite's RETURNING names only the updated table: the webhook is read after.
    enabled = select(Webhook.id).where(Webhook.enabled.is_(True))
    return claimed.where(WebhookDelivery.webhook_id.in_(enabled))


# Built once: an attempt only binds its values (no statement building, no cache key).
_CLAIM = {True: _claim_statement(True), False: _claim_statement(False)}
_CLAIM_ASYNCHRONOUS = _asynchronous(_CLAIM[True])
_WEBHOOK_OF = select(*_WEBHOOK_FIELDS).where(Webhook.id == bindparam("webhook_id"))


def claim_in(conn: Connection, box: SecretBox, delivery_id: int, now: datetime) -> Attempt | None:
    """`claim` as one conditional UPDATE ... RETURNING, atomic on its own (the worker
    runs it in autocommit: one round trip). Of two workers claiming at once, the
    second re-reads the row after the first's commit, finds it leased (not due) and
    gets nothing; on SQLite writers take turns."""
    postgres = conn.dialect.name == "postgresql"
    params = {
        "delivery_id": delivery_id,
        "now": now,
        "lease_end": now + timedelta(seconds=LEASE_SECONDS),
    }
    if _asynchronous_commit(conn):
        found = sql.run(conn, _CLAIM_ASYNCHRONOUS, params).one_or_none()
    else:
        found = conn.execute(_CLAIM[postgres], params).one_or_none()
    if found is None:
        return None
    row: tuple[Any, ...] = tuple(found)
    webhook_id, message_id, payload, number = row[:4]
    hook = row[4:] if postgres else conn.execute(_WEBHOOK_OF, {"webhook_id": webhook_id}).one()
    return Attempt(
        delivery_id=delivery_id,
        webhook_id=webhook_id,
        url=hook[0],
        message_id=message_id,
        body=signing.encode_body(payload),
        number=number,
        secrets=_secrets(box, hook[1], hook[2], hook[3], now),
    )


def _delay(answer: Answer, attempt: int, schedule: Sequence[int]) -> float | None:
    """Seconds until the next attempt, or None when the schedule ran out."""
    if attempt - 1 >= len(schedule):
        return None
    wait = float(schedule[attempt - 1])
    if answer.status in HONOURS_RETRY_AFTER and answer.retry_after is not None:
        wait = max(wait, min(answer.retry_after, MAX_RETRY_AFTER_SECONDS))
    return wait


@dataclass(frozen=True)
class Recorded:
    outcome: str  # succeeded, retry, dead, disabled, stale
    retry_in: float | None = None


def record(
    uow: UnitOfWork, attempt: Attempt, answer: Answer, now: datetime, schedule: Sequence[int]
) -> Recorded:
    """Write the answer of `attempt`; a 410 disables the webhook (audited)."""
    if answer.status != GONE:
        return record_in(uow.session.connection(), attempt, answer, now, schedule)
    session = uow.session
    delivery = session.execute(
        select(WebhookDelivery).where(WebhookDelivery.id == attempt.delivery_id).with_for_update()
    ).scalar_one_or_none()
    if delivery is None or delivery.attempts != attempt.number:
        return Recorded("stale")  # deleted, or claimed again after our lease ran out
    delivery.last_status_code = answer.status
    delivery.last_error = (answer.error or None) and answer.error[:200]
    webhook = session.get(Webhook, delivery.webhook_id)
    if webhook is not None:
        disable(uow, webhook, DISABLED_BY_GONE, now)
    delivery.status = DeliveryStatus.DEAD
    delivery.next_attempt_at = None
    return Recorded("disabled")


def _record_statement(*changed: str) -> Update:
    """The UPDATE writing an answer: the status code and error, and `changed`."""
    types = {
        "status": WebhookDelivery.status.type,
        "next_attempt_at": WebhookDelivery.next_attempt_at.type,
        "dispatched_at": WebhookDelivery.dispatched_at.type,
    }
    return (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == bindparam("delivery_id"),
            WebhookDelivery.attempts == bindparam("number"),
        )
        .values(
            last_status_code=bindparam("last_status_code", type_=Integer()),
            last_error=bindparam("last_error", type_=WebhookDelivery.last_error.type),
            **{name: bindparam(name, type_=types[name]) for name in changed},
        )
    )


_RECORD_DONE = _record_statement("status", "next_attempt_at")  # succeeded, dead
_RECORD_RETRY = _record_statement("next_attempt_at", "dispatched_at")
_RECORD_ASYNCHRONOUS = {s: _asynchronous(s) for s in (_RECORD_DONE, _RECORD_RETRY)}


def record_in(
    conn: Connection, attempt: Attempt, answer: Answer, now: datetime, schedule: Sequence[int]
) -> Recorded:
    """Write an answer other than 410 (which needs `record`'s transaction) as one
    UPDATE, atomic on its own; it matches only while the row still holds this
    attempt's number, so a late answer never overwrites a newer attempt's."""
    if answer.status == GONE:
        raise ValueError("a 410 disables the webhook: use record()")
    params: dict[str, object] = {
        "delivery_id": attempt.delivery_id,
        "number": attempt.number,
        "last_status_code": answer.status,
        "last_error": (answer.error or None) and answer.error[:200],
    }
    wait = None if answer.succeeded else _delay(answer, attempt.number, schedule)
    if answer.succeeded:
        outcome, statement = Recorded("succeeded"), _RECORD_DONE
        params.update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None, last_error=None)
    elif wait is None:
        outcome, statement = Recorded("dead"), _RECORD_DONE
        params.update(status=DeliveryStatus.DEAD, next_attempt_at=None)
    else:
        outcome, statement = Recorded("retry", wait), _RECORD_RETRY
        due = now + timedelta(seconds=wait)
        # The worker publishes a near retry itself; the sweep sends the rest once due.
        params.update(next_attempt_at=due, dispatched_at=due)
    if _asynchronous_commit(conn):
        changed = sql.run(conn, _RECORD_ASYNCHRONOUS[statement], params).rowcount
    else:
        changed = rowcount(conn.execute(statement, params))
    if changed != 1:
        return Recorded("stale")  # deleted, or claimed again after our lease ran out
    return outcome


def disable(uow: UnitOfWork, webhook: Webhook, reason: str, now: datetime) -> None:
    """Stop a webhook: its pending deliveries are dead, and the trail says why."""
    if not webhook.enabled:
        return
    webhook.enabled = False
    webhook.disabled_reason = reason
    webhook.updated_at = now
    uow.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.webhook_id == webhook.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.DEAD, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    audit.append(
        uow,
        webhook.org_id,
        EventType.WEBHOOK_DISABLED,
        Outcome.SUCCESS,
        audit.SYSTEM,
        details={"webhook_id": webhook.id, "reason": reason},
    )


def due_deliveries(
    session_uow: UnitOfWork, now: datetime, redispatch_after_seconds: int, limit: int = 500
) -> list[int]:
    """Pending deliveries of enabled webhooks that are due and were not dispatched
    lately (a lost message, a scheduled retry, a killed worker's lease that ran out):
    their dispatched_at is bumped and their ids returned for publishing."""
    session = session_uow.session
    quiet_since = now - timedelta(seconds=redispatch_after_seconds)
    ids = list(
        session.execute(
            select(WebhookDelivery.id)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
                Webhook.enabled.is_(True),
                or_(
                    WebhookDelivery.dispatched_at.is_(None),
                    WebhookDelivery.dispatched_at < quiet_since,
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
            .with_for_update(of=WebhookDelivery, skip_locked=True)
        ).scalars()
    )
    if ids:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids
