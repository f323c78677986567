"""SQLAlchemy 2 typed models: the whole schema, in one place."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.codes import MAX_CODES, MIN_CODES


def new_id() -> str:
    return str(uuid.uuid4())


# Stored and sent as their values: a StrEnum member equals its string, so rows, JSON
# and comparisons with plain strings are unchanged.


class RegenerationStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"  # the sheet waits to be retrieved
    FAILED = "failed"
    RETRIEVED = "retrieved"
    EXPIRED = "expired"  # the sheet expired before it was retrieved


IN_PROGRESS = frozenset({RegenerationStatus.QUEUED, RegenerationStatus.PROCESSING})
FINISHED = frozenset(RegenerationStatus) - IN_PROGRESS


class RegenerationReason(StrEnum):
    REGENERATION = "regeneration"  # asked for by the user, with a TOTP the worker judges
    ENROLLMENT = "enrollment"  # the first set, queued by a confirmed enrollment


class Role(StrEnum):
    """What an API token may do."""

    USER = "user"
    SERVICE = "service"
    ADMIN = "admin"
    AUDITOR = "auditor"


class TokenKind(StrEnum):
    BEARER = "token"
    SESSION = "session"  # a browser session's token


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON}


def _now() -> datetime:
    return datetime.now(UTC)


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint(f"code_count BETWEEN {MIN_CODES} AND {MAX_CODES}", name="code_count_range"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    backup_codes_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    code_count: Mapped[int] = mapped_column(Integer, default=5)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    # Whether users are told by mail of what happens to their MFA (domain.notify).
    notify_users: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Free text printed in every mail (where to ask for help); untrusted, never a header
    # except Reply-To when it is a bare address.
    support_contact: Mapped[str | None] = mapped_column(String(200))


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("org_id", "external_id", name="org_external"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(128))
    email: Mapped[str | None] = mapped_column(String(320))
    recovery_email: Mapped[str | None] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime | None]


class TotpEnrollment(Base):
    """One per user: pending until confirmed_at is set."""

    __tablename__ = "totp_enrollments"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    confirmed_at: Mapped[datetime | None]
    last_accepted_step: Mapped[int | None] = mapped_column(BigInteger)
    drift: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class BackupCode(Base):
    __tablename__ = "backup_codes"
    __table_args__ = (Index("ix_backup_codes_user_locator", "user_id", "locator"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    set_id: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    locator: Mapped[str] = mapped_column(String(4))
    hash: Mapped[str] = mapped_column(String(255))
    # How many symbols the code has: 12 (sets made before the check symbol) or 16.
    # Written by whoever inserts a code (PlainCode.symbols); the server default 12
    # is what migration 0006 gave the codes that existed before.
    symbols: Mapped[int] = mapped_column(Integer, server_default="12")
    created_at: Mapped[datetime] = mapped_column(default=_now)
    spent_at: Mapped[datetime | None]
    deactivated_at: Mapped[datetime | None]


class Regeneration(Base):
    __tablename__ = "regenerations"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="user_idempotency"),
        Index("ix_regenerations_status_dispatched", "status", "dispatched_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RegenerationStatus.QUEUED)
    failure: Mapped[str | None] = mapped_column(String(32))
    code_count: Mapped[int] = mapped_column(Integer)
    accepted_at: Mapped[datetime]
    # The submitted 6-digit value, encrypted; wiped once judged.
    totp_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    body_fingerprint: Mapped[str | None] = mapped_column(String(64))
    set_id: Mapped[str | None] = mapped_column(String(16))
    # Who asked, for the audit events the worker writes later.
    actor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    dispatched_at: Mapped[datetime | None]
    dispatch_count: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    retrieved_at: Mapped[datetime | None]


class Sheet(Base):
    """The rendered codes, encrypted, between rendering and retrieval or expiry."""

    __tablename__ = "sheets"

    regeneration_id: Mapped[str] = mapped_column(
        ForeignKey("regenerations.id", ondelete="CASCADE"), primary_key=True
    )
    pdf_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    text_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class OutboxMessage(Base):
    """A task to publish, written in the transaction that needs it published."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)
    published_at: Mapped[datetime | None] = mapped_column(index=True)


class AuthFailure(Base):
    """One failed (or mistyped) attempt: the sliding windows per source count these.
    `source` is the attempt's source key (domain.limits.source_key), null for TOTP;
    `audited` marks the mistyped inputs whose batch was written to the trail."""

    __tablename__ = "auth_failures"
    __table_args__ = (
        Index("ix_auth_failures_user_time", "user_id", "occurred_at"),
        Index("ix_auth_failures_user_kind_source", "user_id", "kind", "source", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(64))
    audited: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    occurred_at: Mapped[datetime] = mapped_column(default=_now)


class AttemptLimit(Base):
    """A user's standing for one factor ("backup_codes" or "totp"): consecutive
    failures (only a success resets them), the user-wide window (anchored at its
    first failure) and the permanent lock at the cap. Changed under the user's lock."""

    __tablename__ = "attempt_limits"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    factor: Mapped[str] = mapped_column(String(16), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime | None]
    window_failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    principal_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    # SHA-256 of a 256-bit random token: a slow hash buys nothing at that entropy.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    revoked_at: Mapped[datetime | None]
    # None: never expires (operators' CLI tokens without --ttl).
    expires_at: Mapped[datetime | None]
    kind: Mapped[str] = mapped_column(
        String(16), default=TokenKind.BEARER, server_default=TokenKind.BEARER
    )  # TokenKind
    # Written lazily (at most once a minute) by the token API; never on every request.
    last_used_at: Mapped[datetime | None]


class RequestThrottle(Base):
    """A fixed one-minute window counter, shared by every process (one UPSERT a hit)."""

    __tablename__ = "request_throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class AuditEvent(Base):
    """Append-only; one hash chain per organization (gapless seq)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("org_id", "seq", name="org_seq"),
        Index("ix_audit_events_org_user", "org_id", "user_id"),
        Index("ix_audit_events_org_time", "org_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_principal_id: Mapped[str | None] = mapped_column(String(128))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    actor_token_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # The service's own id of the request (request_id is the caller's choice).
    server_request_id: Mapped[str | None] = mapped_column(String(64))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The head of an organization's chain; its row lock serialises appends.
    It only moves forward (triggers, migration 0003)."""

    __tablename__ = "audit_heads"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    # Checkpoints ever signed for this chain; only goes up (migration 0003), so a
    # deleted checkpoint row shows even when every one of them is gone.
    checkpoints: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class AuditCheckpoint(Base):
    """An Ed25519 signature over a chain head, so truncation and rewrites show."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoints_org_seq", "org_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)


class MailStatus(StrEnum):
    PENDING = "pending"  # not sent yet, or a retry is due at next_attempt_at
    SENT = "sent"
    FAILED = "failed"  # retried for a day without success


class MailDelivery(Base):
    """One mail to one address, inserted with the audit event that causes it (the
    outbox publishes its id). The address is personal data: it stays here, never in
    the audit trail. The repudiation ticket waits encrypted until the mail is sent."""

    __tablename__ = "mail_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "kind", "recipient_kind", name="event_kind_recipient"),
        Index("ix_mail_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(String(36))
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_kind: Mapped[str] = mapped_column(String(16))  # email or recovery_email
    kind: Mapped[str] = mapped_column(String(32))  # domain.notify.mail_rules.MailKind
    # Set at the first attempt, then kept: a mail sent again is recognisably the same.
    message_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=MailStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the sweep publishes it (again): a retry's time, or a lost attempt's end.
    next_attempt_at: Mapped[datetime]
    # Held by an attempt until then (a worker killed mid-send frees it by waiting).
    leased_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(200))
    ticket_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    sent_at: Mapped[datetime | None]


class RepudiationTicket(Base):
    """The "If this wasn't you" link of one mail: only its SHA-256 is kept."""

    __tablename__ = "repudiation_tickets"

    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class UiTicket(Base):
    """A one-time link to the pages (domain.ui_sessions): only its SHA-256 is kept.
    Its principal may be no user (an auditor, an administrator), so it names the
    principal as a token does; deleting a user deletes their tickets."""

    __tablename__ = "ui_tickets"
    __table_args__ = (Index("ix_ui_tickets_org_principal", "org_id", "principal_id"),)

    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    principal_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not tried yet, or a retry is scheduled
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # the schedule ran out, or the webhook was disabled


class Webhook(Base):
    """An organization's receiver of events. Secrets are stored encrypted (the secrets
    box); the previous one keeps signing beside the new one until it expires."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(500), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One webhook event for one webhook: what is sent (never a secret) and how it went.
    `next_attempt_at` is when it is due; while an attempt runs it is the attempt's lease
    end, so a worker killed mid-delivery leaves it due again once that passes."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "message_id", name="webhook_message"),
        Index("ix_webhook_deliveries_status_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_id", "webhook_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    # The `webhook-id` header: the event's id, `<id>.<type>` for a derived type.
    message_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str | None] = mapped_column(String(36))
    event_seq: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)
