"""The administrator's webhooks: create, change, rotate, ping, delete, and the
deliveries list with its replay. Every change is audited, never with a secret
(only the URL's origin is recorded: a path or query may carry a receiver's token).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select, update

from domain import audit
from domain.audit.types import EventType, Outcome
from domain.crypto import SecretBox
from domain.errors import InvalidRequest, NotFound, TooManyWebhooks
from domain.models import DeliveryStatus, Organization, Webhook, WebhookDelivery, new_id
from domain.notify import signing, webhook_rules, webhooks
from domain.notify.webhook_addresses import AllowPrivate, url_problem
from domain.uow import UnitOfWork

MAX_WEBHOOKS = 10
MAX_DESCRIPTION = 500
MAX_URL = 2048
MAX_PATTERNS = 50
DISABLED_BY_ADMIN = "disabled by an administrator"
RESUME_AT_ONCE = 1000  # pending deliveries queued on re-enabling; the sweep takes the rest


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_url(url: str, allow: AllowPrivate) -> str:
    if len(url) > MAX_URL:
        raise InvalidRequest(f"url is longer than {MAX_URL} characters", field="url")
    problem = url_problem(url, allow)
    if problem is not None:
        raise InvalidRequest(problem, field="url")
    return url


def check_events(events: list[str]) -> list[str]:
    if not events:
        raise InvalidRequest("events needs at least one type", field="events")
    if len(events) > MAX_PATTERNS:
        raise InvalidRequest(f"events holds at most {MAX_PATTERNS} entries", field="events")
    unknown = webhook_rules.unknown_pattern(events)
    if unknown is not None:
        raise InvalidRequest(f"events: {unknown[:80]!r} is no webhook type", field="events")
    return list(dict.fromkeys(events))


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidRequest(
            f"description is longer than {MAX_DESCRIPTION} characters", field="description"
        )
    return description


def get(uow: UnitOfWork, org_id: str, webhook_id: str) -> Webhook:
    webhook = uow.session.get(Webhook, webhook_id) if len(webhook_id) <= 36 else None
    if webhook is None or webhook.org_id != org_id:
        raise NotFound("no such webhook")
    return webhook


def list_all(uow: UnitOfWork, org_id: str) -> list[Webhook]:
    return list(
        uow.session.execute(
            select(Webhook).where(Webhook.org_id == org_id).order_by(Webhook.created_at, Webhook.id)
        ).scalars()
    )


def _event(uow: UnitOfWork, webhook: Webhook, kind: str, ctx: audit.Context, **more: Any) -> None:
    details = {"webhook_id": webhook.id, **more}
    audit.append(uow, webhook.org_id, kind, Outcome.SUCCESS, ctx, details=details)


def create(
    uow: UnitOfWork,
    box: SecretBox,
    org_id: str,
    url: str,
    events: list[str],
    description: str,
    allow: AllowPrivate,
    ctx: audit.Context,
    now: datetime,
) -> tuple[Webhook, str]:
    """A new webhook and its secret (the one time it is shown)."""
    url, events = check_url(url, allow), check_events(events)
    description = check_description(description)
    # The organization's row lock: two concurrent creations cannot both be the tenth.
    uow.session.execute(select(Organization).where(Organization.id == org_id).with_for_update())
    count = uow.session.execute(
        select(func.count()).select_from(Webhook).where(Webhook.org_id == org_id)
    ).scalar_one()
    if count >= MAX_WEBHOOKS:
        raise TooManyWebhooks(f"at most {MAX_WEBHOOKS} webhooks an organization")
    secret = signing.new_secret()
    webhook = Webhook(
        id=new_id(),
        org_id=org_id,
        url=url,
        events=events,
        description=description,
        enabled=True,
        secret_ciphertext=box.encrypt_text(secret),
        created_at=now,
    )
    uow.session.add(webhook)
    uow.session.flush()
    # Before its event, so that the new webhook hears of its own creation.
    audit.count_webhooks(uow.session, org_id, +1)
    _event(uow, webhook, EventType.WEBHOOK_CREATED, ctx, origin=_origin(url), events=events)
    return webhook, secret


@dataclass(frozen=True)
class Changes:
    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


def update_webhook(
    uow: UnitOfWork,
    org_id: str,
    webhook_id: str,
    changes: Changes,
    allow: AllowPrivate,
    ctx: audit.Context,
    now: datetime,
) -> Webhook:
    webhook = get(uow, org_id, webhook_id)
    changed: dict[str, Any] = {}
    if changes.url is not None and changes.url != webhook.url:
        webhook.url = check_url(changes.url, allow)
        changed["origin"] = _origin(webhook.url)
    if changes.events is not None:
        webhook.events = check_events(changes.events)
        changed["events"] = webhook.events
    if changes.description is not None:
        webhook.description = check_description(changes.description)
        changed["description"] = True
    if changes.enabled is not None and changes.enabled != webhook.enabled:
        webhook.enabled = changes.enabled
        changed["enabled"] = changes.enabled
        if changes.enabled:
            webhook.disabled_reason = None
            _resume(uow, webhook, now)
        else:
            webhook.disabled_reason = DISABLED_BY_ADMIN
    webhook.updated_at = now
    uow.session.flush()
    _event(uow, webhook, EventType.WEBHOOK_UPDATED, ctx, changed=sorted(changed))
    return webhook


def _resume(uow: UnitOfWork, webhook: Webhook, now: datetime) -> None:
    """Re-enabled: what is pending is due now (paused deliveries resume)."""
    uow.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.webhook_id == webhook.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(next_attempt_at=now, dispatched_at=now)
        .execution_options(synchronize_session=False)
    )
    pending = uow.session.execute(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.webhook_id == webhook.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .order_by(WebhookDelivery.id)
        .limit(RESUME_AT_ONCE)
    ).scalars()
    for delivery_id in pending:
        webhooks.enqueue_delivery(uow, delivery_id)


def delete(uow: UnitOfWork, org_id: str, webhook_id: str, ctx: audit.Context) -> None:
    webhook = get(uow, org_id, webhook_id)
    _event(uow, webhook, EventType.WEBHOOK_DELETED, ctx, origin=_origin(webhook.url))
    uow.session.execute(
        sql_delete(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook.id)
        .execution_options(synchronize_session=False)
    )
    uow.session.delete(webhook)
    uow.session.flush()
    audit.count_webhooks(uow.session, org_id, -1)  # after its event, which it still hears


def rotate_secret(
    uow: UnitOfWork,
    box: SecretBox,
    org_id: str,
    webhook_id: str,
    ctx: audit.Context,
    now: datetime,
) -> str:
    """A new secret; the current one keeps signing beside it for 24 hours."""
    webhook = get(uow, org_id, webhook_id)
    secret = signing.new_secret()
    webhook.previous_secret_ciphertext = webhook.secret_ciphertext
    webhook.previous_secret_expires_at = now + timedelta(seconds=signing.ROTATION_OVERLAP_SECONDS)
    webhook.secret_ciphertext = box.encrypt_text(secret)
    webhook.updated_at = now
    uow.session.flush()
    _event(uow, webhook, EventType.WEBHOOK_SECRET_ROTATED, ctx)
    return secret


def ping(uow: UnitOfWork, org_id: str, webhook_id: str, now: datetime) -> WebhookDelivery:
    webhook = get(uow, org_id, webhook_id)
    out = webhook_rules.ping(org_id, new_id(), now)
    return webhooks.queue(uow, webhook, out, now)


def deliveries(
    uow: UnitOfWork,
    org_id: str,
    webhook_id: str,
    status: str | None,
    limit: int,
    before_id: int | None,
) -> tuple[list[WebhookDelivery], int | None]:
    """One page, newest first, and the id to continue before (None on the last page)."""
    webhook = get(uow, org_id, webhook_id)
    if status is not None and status not in set(DeliveryStatus):
        raise InvalidRequest("status must be pending, succeeded or dead", field="status")
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    rows = list(
        uow.session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)).scalars()
    )
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def retry(
    uow: UnitOfWork, org_id: str, webhook_id: str, delivery_id: str, now: datetime
) -> WebhookDelivery:
    """Deliver again now, whatever the delivery's status."""
    webhook = get(uow, org_id, webhook_id)
    found = (
        uow.session.get(WebhookDelivery, int(delivery_id))
        if delivery_id.isascii() and delivery_id.isdigit() and len(delivery_id) <= 18
        else None
    )
    if found is None or found.webhook_id != webhook.id:
        raise NotFound("no such delivery")
    found.status = DeliveryStatus.PENDING
    found.next_attempt_at = now
    found.dispatched_at = now
    uow.session.flush()
    webhooks.enqueue_delivery(uow, found.id)
    return found
