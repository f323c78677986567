"""The checks on the checkpoints as a set, after the chain walk (audit_verify).

Each returns None, or the (first bad seq, reason) to report. The walk has
already checked every checkpoint's signature and that the chain matches it; what
is left is what the rows alone cannot show: one deleted, reordered, or never
written in time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.audit import checkpoint_file
from domain.clock import rfc3339_micros
from domain.models import AuditCheckpoint, AuditEvent, AuditHead
from domain.ports import AuditSettings

Problem = tuple[int, str] | None
BATCH = 1000


def _in_written_order(session: Session, org_id: str) -> Iterator[AuditCheckpoint]:
    after = 0
    while True:
        rows = list(
            session.execute(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.org_id == org_id, AuditCheckpoint.id > after)
                .order_by(AuditCheckpoint.id)
                .limit(BATCH)
            ).scalars()
        )
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].id


def _in_seq_order(session: Session, org_id: str) -> Iterator[AuditCheckpoint]:
    after: tuple[int, int] = (-1, 0)
    while True:
        rows = list(
            session.execute(
                select(AuditCheckpoint)
                .where(
                    AuditCheckpoint.org_id == org_id,
                    (AuditCheckpoint.seq > after[0])
                    | ((AuditCheckpoint.seq == after[0]) & (AuditCheckpoint.id > after[1])),
                )
                .order_by(AuditCheckpoint.seq, AuditCheckpoint.id)
                .limit(BATCH)
            ).scalars()
        )
        yield from rows
        if len(rows) < BATCH:
            return
        after = (rows[-1].seq, rows[-1].id)


def order(session: Session, org_id: str) -> Problem:
    """In the order they were written, the checkpoints' seqs strictly increase
    (one chain's checkpointers take turns under the head's lock)."""
    previous: AuditCheckpoint | None = None
    for cp in _in_written_order(session, org_id):
        if previous is not None and cp.seq <= previous.seq:
            return (
                min(cp.seq, previous.seq),
                f"the checkpoint at seq {cp.seq} was written after the one at seq "
                f"{previous.seq} (out of order)",
            )
        previous = cp
    return None


def _count_rows(session: Session, org_id: str) -> int:
    query = select(func.count()).where(AuditCheckpoint.org_id == org_id)
    return int(session.execute(query).scalar_one())


def _head_count(session: Session, org_id: str) -> int:
    query = select(AuditHead.checkpoints).where(AuditHead.org_id == org_id)
    return int(session.execute(query).scalar_one_or_none() or 0)


def count(session: Session, org_id: str) -> Problem:
    """As many rows as the head counts checkpoints signed. Read rows, head, rows:
    a checkpoint committed meanwhile (row and count together) changes the rows,
    and the three are read again."""
    for _ in range(5):
        rows = _count_rows(session, org_id)
        signed = _head_count(session, org_id)
        if _count_rows(session, org_id) == rows:
            break
    if rows < signed:
        return (
            1,
            f"{signed} checkpoints were signed but {rows} remain ({signed - rows} deleted)",
        )
    if rows > signed:
        return (1, f"{rows} checkpoints but the head counts {signed} signed (planted)")
    return None


def _same(cp: AuditCheckpoint, line: dict[str, Any]) -> bool:
    return bool(
        cp.hash == line["hash"]
        and cp.key_id == line["key_id"]
        and cp.signature == line["signature"]
        and rfc3339_micros(cp.signed_at) == line["signed_at"]
    )


def file_matches(session: Session, settings: AuditSettings, org_id: str) -> Problem:
    """Every line of the checkpoint file is a row, unchanged (rows may be missing
    from the file: it is written after the commit, so two signers may also append
    their lines in either order). No readable file: nothing to say."""
    lines = checkpoint_file.read(settings, org_id)
    if lines is None:
        return None
    rows = {cp.seq: cp for cp in _in_seq_order(session, org_id)}
    for line in lines:
        if line.get("bad"):
            return (1, f"line {line['line']} of the checkpoint file is not a checkpoint")
        seq = int(line["seq"])
        if line["org_id"] != org_id:
            return (max(seq, 1), f"the checkpoint file names another chain at seq {seq}")
        row = rows.get(seq)
        if row is None:
            return (seq, f"the checkpoint at seq {seq} in the checkpoint file is missing")
        if not _same(row, line):
            return (seq, f"the checkpoint at seq {seq} differs from the checkpoint file")
    return None


def unsigned(session: Session, org_id: str, head_seq: int) -> tuple[int, int]:
    """(the last signed seq, the events after it)."""
    query = select(func.max(AuditCheckpoint.seq)).where(AuditCheckpoint.org_id == org_id)
    signed = int(session.execute(query).scalar_one_or_none() or 0)
    return signed, max(head_seq - signed, 0)


def timely(
    session: Session, settings: AuditSettings, org_id: str, head_seq: int, now: datetime
) -> Problem:
    """No event older than twice the checkpoint interval is left unsigned."""
    signed, pending = unsigned(session, org_id, head_seq)
    if pending == 0:
        return None
    query = select(AuditEvent.occurred_at).where(
        AuditEvent.org_id == org_id, AuditEvent.seq == signed + 1
    )
    oldest = session.execute(query).scalars().first()
    if oldest is None:
        return None
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    limit = timedelta(seconds=2 * settings.checkpoint_interval_seconds)
    if now - oldest > limit:
        return (
            signed + 1,
            f"event {signed + 1} is older than twice the checkpoint interval "
            f"({int(limit.total_seconds())} s) and no checkpoint covers it",
        )
    return None
