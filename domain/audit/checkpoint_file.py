"""Checkpoints outside the database: one append-only JSON-lines file per organization
under MFA_CHECKPOINT_DIR, and a log line, both written once the checkpoint committed.

Written after the commit, the file holds a subset of the checkpoint rows (a crash
between the two leaves a row the file lacks, never the reverse): verification
requires every line to match a row, so rows deleted or edited in the database show.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domain.ports import AuditSettings
from domain.uow import UnitOfWork

log = logging.getLogger("mfa.audit.checkpoint")

_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
FIELDS = ("org_id", "seq", "hash", "signed_at", "key_id", "signature")


def path_for(settings: AuditSettings, org_id: str) -> Path:
    name = org_id if _SAFE_NAME.match(org_id) else hashlib.sha256(org_id.encode()).hexdigest()
    return settings.checkpoint_folder / f"{name}.jsonl"


def note(uow: UnitOfWork, settings: AuditSettings, record: dict[str, Any]) -> None:
    """Have a signed checkpoint leave the database once the unit of work commits."""
    uow.call_after_commit(lambda: write(settings, record))


def write(settings: AuditSettings, record: dict[str, Any]) -> None:
    """A log line, and a line appended to the organization's file (fsynced). A file
    that cannot be written is logged, not raised: the checkpoint is committed."""
    log.info(
        "audit checkpoint %s at seq %s",
        record["org_id"],
        record["seq"],
        extra={f"checkpoint_{name}": record[name] for name in FIELDS},
    )
    path = path_for(settings, record["org_id"])
    line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.error("cannot append the checkpoint to %s: %s", path, exc.strerror)


def read(settings: AuditSettings, org_id: str) -> Iterator[dict[str, Any]] | None:
    """The organization's file, line by line; None where there is no readable file."""
    path = path_for(settings, org_id)
    try:
        handle = path.open(encoding="utf-8")
    except OSError:
        return None
    return _lines(handle)


def _lines(handle: Any) -> Iterator[dict[str, Any]]:
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not _well_formed(record):
                yield {"line": number, "bad": True}
                continue
            yield record


def _well_formed(record: object) -> bool:
    """Every field there, the seq a whole number and the rest text: anything else in
    the file is named as a bad line, never a crash of the verification."""
    if not isinstance(record, dict) or any(f not in record for f in FIELDS):
        return False
    seq = record["seq"]
    texts = (record[f] for f in FIELDS if f != "seq")
    return (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and all(isinstance(t, str) for t in texts)
    )
