"""Verification of an organization's audit chain: recompute it and name the first bad event.

The walk reads events in (seq, id) order in keyset batches, so memory stays
flat whatever the length of the chain, and checks for each event that its seq
follows the last one (gapless from 1, no duplicate), that its prev_hash links
to the previous event and that its hash is the hash of its content. Along the
way every signed checkpoint is checked: its Ed25519 signature, and the chain's
hash at its seq (a chain rewritten with recomputed hashes differs there). At
the end the chain must reach every checkpoint and agree with the head row
(a truncated tail falls short of both).

The checkpoints themselves are checked too, since deleting them would erase
the evidence: in the order they were written their seqs must increase, their
number must be the head's forward-only count of checkpoints signed, every line
of the checkpoint file (checkpoint_file) must match a row, and no event older
than twice the checkpoint interval may be left unsigned.

Under READ COMMITTED (PostgreSQL's default) appends may commit during the walk;
the head is read only once the events run out, and the events are read once
more after that, so a concurrent append is never taken for a truncation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, and_, func, or_, select
from sqlalchemy.orm import Session

from domain.audit import GENESIS_HASH, chain_hash
from domain.audit import checkpoint_checks as checks
from domain.audit.checkpoints import VerificationKeys, signature_valid, verification_keys
from domain.clock import rfc3339_millis
from domain.models import AuditCheckpoint, AuditEvent, AuditHead
from domain.ports import AuditSettings

BATCH = 1000
_EVENTS = AuditEvent.__table__


@dataclass(frozen=True)
class Verification:
    ok: bool
    events_checked: int
    head: dict[str, Any] | None
    first_bad_seq: int | None
    reason: str | None
    checkpoint: dict[str, Any] | None
    # Events after the last checkpoint: not yet signed.
    unsigned_events: int = 0


class _Bad(Exception):
    """The first bad event was found; the walk stops there."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = max(seq, 1)
        self.reason = reason


def _checkpoint_dict(cp: AuditCheckpoint, verified: bool) -> dict[str, Any]:
    return {
        "seq": cp.seq,
        "hash": cp.hash,
        "signed_at": rfc3339_millis(cp.signed_at),
        "key_id": cp.key_id,
        "verified": verified,
    }


class _Walk:
    def __init__(
        self,
        session: Session,
        org_id: str,
        keys: VerificationKeys,
        batch: int,
        expect: tuple[int, str] | None = None,
    ) -> None:
        self.session = session
        self.expect = expect
        self.expect_met = False
        self.org_id = org_id
        self.keys = keys
        self.current_key_seen = False  # after that, a retired key's checkpoint is a forgery
        self.batch = batch
        self.checked = 0
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.before_last_hash: str | None = None  # to tell an inserted event from an edited one
        self.after: tuple[int, str] | None = None  # keyset position (seq, id)
        self.checkpoint: dict[str, Any] | None = None
        self.head_seq = 0

    # -- reading -------------------------------------------------------------------

    def _event_batch(self) -> list[Row[Any]]:
        query = select(_EVENTS).where(_EVENTS.c.org_id == self.org_id)
        if self.after is not None:
            seq, id_ = self.after
            query = query.where(
                _EVENTS.c.seq >= seq,
                or_(_EVENTS.c.seq > seq, and_(_EVENTS.c.seq == seq, _EVENTS.c.id > id_)),
            )
        query = query.order_by(_EVENTS.c.seq, _EVENTS.c.id).limit(self.batch)
        return list(self.session.execute(query).all())

    def _checkpoints(self, lo: int | None, hi: int | None) -> Iterator[AuditCheckpoint]:
        """Checkpoints with lo < seq <= hi, in seq order, a batch at a time."""
        after: tuple[int, int] | None = None
        while True:
            query = select(AuditCheckpoint).where(AuditCheckpoint.org_id == self.org_id)
            if lo is not None:
                query = query.where(AuditCheckpoint.seq > lo)
            if hi is not None:
                query = query.where(AuditCheckpoint.seq <= hi)
            if after is not None:
                query = query.where(
                    or_(
                        AuditCheckpoint.seq > after[0],
                        and_(AuditCheckpoint.seq == after[0], AuditCheckpoint.id > after[1]),
                    )
                )
            query = query.order_by(AuditCheckpoint.seq, AuditCheckpoint.id).limit(self.batch)
            rows = list(self.session.execute(query).scalars())
            yield from rows
            if len(rows) < self.batch:
                return
            after = (rows[-1].seq, rows[-1].id)

    # -- checking ------------------------------------------------------------------

    def _check_event(self, row: Row[Any]) -> None:
        self.checked += 1
        expected = self.last_seq + 1
        if row.seq < expected:
            raise _Bad(row.seq, f"event {row.seq} appears twice (an event was inserted)")
        if row.seq > expected:
            raise _Bad(expected, f"event {expected} is missing (deleted)")
        if row.prev_hash != self.last_hash:
            if row.prev_hash == self.before_last_hash:
                raise _Bad(
                    self.last_seq,
                    f"event {self.last_seq} was inserted: event {row.seq} links past it",
                )
            raise _Bad(row.seq, f"event {row.seq} does not link to event {self.last_seq}")
        # A Core row carries the model's attribute names, which is all canonical() reads.
        if chain_hash(cast(AuditEvent, row), row.prev_hash) != row.hash:
            raise _Bad(row.seq, f"event {row.seq} does not match its hash (edited)")
        self.before_last_hash = self.last_hash
        self.last_seq, self.last_hash = row.seq, row.hash
        if self.expect is not None and row.seq == self.expect[0]:
            if row.hash != self.expect[1]:
                raise _Bad(row.seq, f"event {row.seq} does not have the expected hash")
            self.expect_met = True

    def _check_signature(self, cp: AuditCheckpoint) -> None:
        key = self.keys.by_id.get(cp.key_id)
        problem = None
        if key is None:
            problem = f"is signed by an unknown key {cp.key_id}"
        elif not signature_valid(cp, key):
            problem = "has no valid signature"
        elif cp.key_id == self.keys.current_id:
            self.current_key_seen = True
        elif self.current_key_seen:
            problem = f"is signed by the retired key {cp.key_id} after the current key took over"
        if problem is not None:
            self.checkpoint = _checkpoint_dict(cp, False)
            raise _Bad(cp.seq, f"the checkpoint at seq {cp.seq} {problem}")

    def _check_checkpoint_in_chain(self, cp: AuditCheckpoint) -> None:
        """A checkpoint at or before the last verified event: the chain must match it."""
        self._check_signature(cp)
        self.checkpoint = _checkpoint_dict(cp, True)
        if cp.seq != self.last_seq or cp.hash != self.last_hash:
            raise _Bad(
                cp.seq,
                f"the chain differs from the checkpoint signed at seq {cp.seq} "
                f"(rewritten at or before it)",
            )

    def _walk_available(self) -> bool:
        """Check every event there is now, with the checkpoints among them in seq
        order, so that whichever comes first is named. Returns whether any event was read."""
        read_any = False
        while rows := self._event_batch():
            read_any = True
            lo = self.last_seq if self.after is not None else None
            pending = self._checkpoints(lo, max(row.seq for row in rows))
            cp = next(pending, None)
            for row in rows:
                self._check_event(row)
                while cp is not None and cp.seq <= self.last_seq:
                    self._check_checkpoint_in_chain(cp)
                    cp = next(pending, None)
            self.after = (rows[-1].seq, rows[-1].id)
            if len(rows) < self.batch:
                break
        return read_any

    def _check_tail(self, head_seq: int, head_hash: str, signed_max: int | None) -> None:
        """The chain must reach every signed checkpoint and agree with the head row,
        both as read before the last look for new events."""
        if signed_max is not None:
            for cp in self._checkpoints(self.last_seq, signed_max):
                self._check_signature(cp)
                self.checkpoint = _checkpoint_dict(cp, True)
                raise _Bad(
                    self.last_seq + 1,
                    f"the chain ends at seq {self.last_seq} but a checkpoint was signed at "
                    f"seq {cp.seq} (truncated)",
                )
        if self.last_seq > head_seq:
            raise _Bad(head_seq + 1, f"events after the head (seq {head_seq}) were added")
        if self.last_seq < head_seq:
            raise _Bad(
                self.last_seq + 1,
                f"the chain ends at seq {self.last_seq} but its head is at seq {head_seq} "
                f"(truncated)",
            )
        if head_hash != self.last_hash:
            raise _Bad(self.last_seq, f"the head's hash differs from event {self.last_seq}")

    def run(self) -> None:
        self._walk_available()
        while True:
            head = self.session.get(AuditHead, self.org_id, populate_existing=True)
            head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS_HASH)
            signed_max = self.session.execute(
                select(func.max(AuditCheckpoint.seq)).where(AuditCheckpoint.org_id == self.org_id)
            ).scalar_one()
            # Whatever the head or a checkpoint covered when read was committed before:
            # read the events once more, so a concurrent append is not taken for a cut.
            target = max(head_seq, signed_max or 0)
            if target > self.last_seq and self._walk_available():
                continue
            break
        self._check_tail(head_seq, head_hash, signed_max)
        self.head_seq = head_seq

    def check_checkpoints(self, settings: AuditSettings, now: datetime) -> None:
        """The checkpoints as a set (audit_checkpoint_checks), then --expect."""
        for problem in (
            checks.order(self.session, self.org_id),
            checks.file_matches(self.session, settings, self.org_id),
            checks.count(self.session, self.org_id),
        ):
            if problem is not None:
                raise _Bad(*problem)
        if self.expect is not None and not self.expect_met:
            raise _Bad(
                self.last_seq + 1,
                f"the chain ends at seq {self.last_seq} but seq {self.expect[0]} was "
                f"expected (truncated)",
            )
        problem = checks.timely(self.session, settings, self.org_id, self.head_seq, now)
        if problem is not None:
            raise _Bad(*problem)


def _table_head(session: Session, org_id: str) -> dict[str, Any] | None:
    row = session.execute(
        select(AuditEvent.seq, AuditEvent.hash)
        .where(AuditEvent.org_id == org_id)
        .order_by(AuditEvent.seq.desc(), AuditEvent.id.desc())
        .limit(1)
    ).first()
    return None if row is None else {"seq": row.seq, "hash": row.hash}


def verify_chain(
    session: Session,
    org_id: str,
    settings: AuditSettings,
    *,
    batch: int = BATCH,
    now: datetime | None = None,
    expect: tuple[int, str] | None = None,
) -> Verification:
    """Recompute the organization's chain and check it against its checkpoints and head;
    `expect` (seq, hash) is a head kept elsewhere that the chain must still hold.

    Reads only; the caller appends AUDIT_VERIFIED if it wants the check recorded.
    """
    walk = _Walk(session, org_id, verification_keys(settings), batch, expect)
    try:
        walk.run()
        walk.check_checkpoints(settings, now or datetime.now(UTC))
    except _Bad as bad:
        head = _table_head(session, org_id)
        return Verification(
            ok=False,
            events_checked=walk.checked,
            head=head,
            first_bad_seq=bad.seq,
            reason=bad.reason,
            checkpoint=walk.checkpoint,
            unsigned_events=checks.unsigned(session, org_id, head["seq"] if head else 0)[1],
        )
    head = None if walk.last_seq == 0 else {"seq": walk.last_seq, "hash": walk.last_hash}
    return Verification(
        ok=True,
        events_checked=walk.checked,
        head=head,
        first_bad_seq=None,
        reason=None,
        checkpoint=walk.checkpoint,
        unsigned_events=checks.unsigned(session, org_id, walk.last_seq)[1],
    )
