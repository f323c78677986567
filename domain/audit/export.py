"""The trail streamed whole, for the security team: NDJSON and CSV in chunks, with
spreadsheet formulas neutralised; memory stays flat whatever the length."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Row, select

from domain.audit.query import Filters, event_to_dict, where_filters
from domain.models import AuditEvent
from domain.uow import UnitOfWorkFactory

_EVENTS = AuditEvent.__table__


def stream_events(
    unit_of_work: UnitOfWorkFactory, org_id: str, filters: Filters, batch: int = 1000
) -> Iterator[Row[Any]]:
    """Every matching event, oldest first, each batch in its own short unit of work, from the
    caller's factory (Services.unit_of_work).

    For exports that take as long as the reader: no transaction (on SQLite, no
    write lock) is held while a slow client reads. Pin filters.max_seq first;
    events are append-only, so the pinned selection cannot change between batches.
    """
    after = 0
    base = where_filters(select(_EVENTS), org_id, filters).order_by(_EVENTS.c.seq).limit(batch)
    while True:
        with unit_of_work() as uow:
            rows = uow.session.execute(base.where(_EVENTS.c.seq > after)).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


CHUNK_BYTES = 64 * 1024


def _chunked(pieces: Iterator[str]) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


def ndjson_chunks(events: Iterator[AuditEvent | Row[Any]]) -> Iterator[bytes]:
    """One AuditEvent JSON object a line, in bytes chunks of about 64 KiB."""
    return _chunked(
        json.dumps(event_to_dict(ev), separators=(",", ":"), ensure_ascii=False) + "\n"
        for ev in events
    )


CSV_COLUMNS = (
    "seq",
    "id",
    "occurred_at",
    "type",
    "outcome",
    "actor_principal_id",
    "actor_role",
    "actor_token_id",
    "user_id",
    "request_id",
    "server_request_id",
    "source_ip",
    "user_agent",
    "details",
    "prev_hash",
    "hash",
)


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A cell a spreadsheet would run as a formula (OWASP CSV injection): user agents and
    # ids come from callers. NDJSON is the byte-exact export; CSV is for reading.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _csv_lines(events: Iterator[AuditEvent | Row[Any]]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for ev in events:
        d = event_to_dict(ev)
        actor = d.pop("actor")
        d.update({f"actor_{k}": v for k, v in actor.items()})
        d["details"] = json.dumps(d["details"], sort_keys=True, ensure_ascii=False)
        writer.writerow([_csv_cell(d[name]) for name in CSV_COLUMNS])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def csv_chunks(events: Iterator[AuditEvent | Row[Any]]) -> Iterator[bytes]:
    """A header line, then one event a line (RFC 4180), in bytes chunks of about 64 KiB."""
    return _chunked(_csv_lines(events))
