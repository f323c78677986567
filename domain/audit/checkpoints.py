"""Signed checkpoints: an Ed25519 signature over each organization's chain head.

A hash chain alone shows an edited, deleted or reordered event, but not a tail
cut off (with the head row reset) nor a chain rewritten from some event on with
every hash recomputed. A signature by a key the database does not hold makes
both show: the chain must still reach every signed (seq, hash) and match it.

Checkpoints live in their own table: appending an event for them would move the
head they have just signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain import notify
from domain.audit import checkpoint_file
from domain.clock import rfc3339_micros, whole_millis
from domain.models import AuditCheckpoint, AuditEvent, AuditHead
from domain.ports import AuditSettings
from domain.uow import UnitOfWork


def _private_key(settings: AuditSettings) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(settings.audit_signing_key)


def public_key(settings: AuditSettings) -> Ed25519PublicKey:
    return _private_key(settings).public_key()


@dataclass(frozen=True)
class VerificationKeys:
    """The current key, and the retired ones that verify only what came before it."""

    current_id: str
    by_id: dict[str, Ed25519PublicKey]


def verification_keys(settings: AuditSettings) -> VerificationKeys:
    current = public_key(settings)
    keys = [current] + [
        Ed25519PublicKey.from_public_bytes(raw) for raw in settings.audit_retired_public_keys
    ]
    return VerificationKeys(key_id(current), {key_id(k): k for k in keys})


def public_key_raw(settings: AuditSettings) -> str:
    """The verification key as base64 of its 32 raw bytes (MFA_AUDIT_RETIRED_PUBLIC_KEYS)."""
    return base64.b64encode(_public_raw(public_key(settings))).decode()


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex of SHA-256(raw key)."""
    return hashlib.sha256(_public_raw(key)).hexdigest()[:16]


def public_key_pem(settings: AuditSettings) -> str:
    """The verification key, for the security team to check checkpoints on their own."""
    return (
        public_key(settings)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def message(org_id: str, seq: int, hash: str, signed_at: datetime) -> bytes:
    """The signed bytes: canonical JSON, so any verifier can rebuild them."""
    body = {"org_id": org_id, "seq": seq, "hash": hash, "signed_at": rfc3339_micros(signed_at)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature_valid(checkpoint: AuditCheckpoint, key: Ed25519PublicKey) -> bool:
    """True when the checkpoint was signed by `key` over exactly its own fields."""
    if checkpoint.key_id != key_id(key):
        return False
    try:
        raw = base64.b64decode(checkpoint.signature.encode(), validate=True)
        key.verify(
            raw, message(checkpoint.org_id, checkpoint.seq, checkpoint.hash, checkpoint.signed_at)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _sign(
    uow: UnitOfWork, settings: AuditSettings, head: AuditHead, now: datetime
) -> AuditCheckpoint:
    """Sign the (locked) head, count it on the head, and have it leave the database
    (checkpoint_file) once committed."""
    session = uow.session
    private = _private_key(settings)
    signed_at = whole_millis(now)  # to the millisecond, as the API shows it
    signature = private.sign(message(head.org_id, head.seq, head.hash, signed_at))
    checkpoint = AuditCheckpoint(
        org_id=head.org_id,
        seq=head.seq,
        hash=head.hash,
        signed_at=signed_at,
        key_id=key_id(private.public_key()),
        signature=base64.b64encode(signature).decode(),
    )
    session.add(checkpoint)
    head.checkpoints = (head.checkpoints or 0) + 1
    session.flush()
    checkpoint_file.note(uow, settings, as_record(checkpoint))
    notify.checkpoint_signed(uow, checkpoint)  # the audit.checkpoint webhook
    return checkpoint


def as_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """A checkpoint as the file and the log line hold it."""
    return {
        "org_id": checkpoint.org_id,
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "signed_at": rfc3339_micros(checkpoint.signed_at),
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
    }


def _locked_head(session: Session, org_id: str) -> AuditHead | None:
    """The head under its row lock: checkpointers of one chain take turns, so its
    checkpoints' seqs strictly increase in the order they were written."""
    return session.execute(
        select(AuditHead)
        .where(AuditHead.org_id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _head_is_backed(session: Session, org_id: str, seq: int, hash: str) -> bool:
    """Sign only a head whose event is there with that hash: a head row that was
    reset or points nowhere is for verification to report, not for us to bless."""
    stored = session.execute(
        select(AuditEvent.hash).where(AuditEvent.org_id == org_id, AuditEvent.seq == seq)
    ).scalars()
    return list(stored) == [hash]


def latest_checkpoint(session: Session, org_id: str) -> AuditCheckpoint | None:
    return session.execute(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.org_id == org_id)
        .order_by(AuditCheckpoint.seq.desc(), AuditCheckpoint.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def sign_if_moved(
    uow: UnitOfWork, settings: AuditSettings, org_id: str, now: datetime
) -> AuditCheckpoint | None:
    """Sign the organization's head if it moved since its last checkpoint (and an
    event backs it); the new checkpoint, or None."""
    session = uow.session
    head = _locked_head(session, org_id)
    if head is None or head.seq <= 0:
        return None
    latest = latest_checkpoint(session, org_id)
    if latest is not None and latest.seq >= head.seq:
        return None
    if not _head_is_backed(session, org_id, head.seq, head.hash):
        return None
    return _sign(uow, settings, head, now)


def checkpoint_org(
    uow: UnitOfWork, settings: AuditSettings, org_id: str, now: datetime
) -> AuditCheckpoint | None:
    """Sign the organization's head now if it moved since its last checkpoint.

    Returns the new checkpoint, or the latest one when the head has not moved,
    or None for an empty chain (or a head no event backs).
    """
    session = uow.session
    return sign_if_moved(uow, settings, org_id, now) or latest_checkpoint(session, org_id)


def moved_heads(session: Session) -> list[str]:
    """The organizations whose head moved since their last checkpoint, in org order."""
    last_signed = (
        select(func.max(AuditCheckpoint.seq))
        .where(AuditCheckpoint.org_id == AuditHead.org_id)
        .correlate(AuditHead)
        .scalar_subquery()
    )
    query = (
        select(AuditHead.org_id)
        .where(AuditHead.seq > 0, AuditHead.seq > func.coalesce(last_signed, 0))
        .order_by(AuditHead.org_id)
    )
    return list(session.execute(query).scalars())


def write_checkpoints(uow: UnitOfWork, settings: AuditSettings, now: datetime) -> int:
    """Sign, in this one transaction, every organization's head that moved since
    its last checkpoint (`mfa-codes audit checkpoint`). Each head is locked while
    it is signed, so one chain's checkpoints take turns. The periodic task signs
    one organization per transaction instead (workers.tasks), holding each head's
    lock only briefly. Returns the number of checkpoints written.
    """
    session = uow.session
    return sum(
        sign_if_moved(uow, settings, org_id, now) is not None for org_id in moved_heads(session)
    )
