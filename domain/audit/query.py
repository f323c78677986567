"""Reading the audit trail: filters, keyset pages, and streamed NDJSON/CSV exports.

Pages are keyed on seq (oldest first) with an opaque cursor, so a page costs
the same wherever it is in the chain. Exports walk the same selection in
batches and yield bytes, so memory stays flat however many events match.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import audit
from domain.clock import rfc3339_micros, rfc3339_millis
from domain.errors import InvalidRequest
from domain.models import AuditEvent
from domain.uow import UnitOfWork

_log = logging.getLogger(__name__)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_EVENTS = AuditEvent.__table__
_TYPE = re.compile(r"^[a-z0-9_.]{0,64}\*?$")
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, as ids and request ids are
_MAX_SEQ = 2**63 - 1
_KNOWN = frozenset({"user_id", "type", "since", "until", "request_id", "limit", "cursor"})

Params = Mapping[str, "str | list[str]"]


@dataclass(frozen=True)
class Filters:
    user_id: str | None = None
    types: tuple[str, ...] = ()  # exact types
    prefixes: tuple[str, ...] = ()  # from values ending in '*'
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None
    # Upper bound on seq: an export streams the chain as it was when it was recorded.
    max_seq: int | None = field(default=None, compare=False)

    def summary(self) -> dict[str, Any]:
        """What was asked for, for the audit event that records a read or an export."""
        out: dict[str, Any] = {}
        if self.user_id is not None:
            out["user_id"] = self.user_id
        if self.types or self.prefixes:
            out["type"] = [*self.types, *(p + "*" for p in self.prefixes)]
        if self.since is not None:
            out["since"] = rfc3339_micros(self.since)
        if self.until is not None:
            out["until"] = rfc3339_micros(self.until)
        if self.request_id is not None:
            out["request_id"] = self.request_id
        return out


@dataclass(frozen=True)
class Page:
    limit: int = DEFAULT_LIMIT
    after_seq: int = 0


# -- parsing -----------------------------------------------------------------------


def _one(params: Params, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidRequest(f"{name} may be given only once", field=name)
        value = value[0]
    return value


def _many(params: Params, name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _timestamp(params: Params, name: str) -> datetime | None:
    raw = _one(params, name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 timestamp such as 2026-11-28T09:14:03Z", field=name
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name} must carry a time zone (Z or +hh:mm)", field=name)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 has no UTC moment
        raise InvalidRequest(f"{name} is out of range", field=name) from None


def _identifier(params: Params, name: str) -> str | None:
    raw = _one(params, name)
    if raw is not None and not _ID.match(raw):
        raise InvalidRequest(f"{name} must be 1 to 128 printable characters", field=name)
    return raw


def parse_filters(params: Params) -> Filters:
    """Filters from query parameters; InvalidRequest names the field at fault."""
    for name in params:
        if name not in _KNOWN:
            raise InvalidRequest(f"unknown query parameter {name!r}", field=name)
    exact: list[str] = []
    prefixes: list[str] = []
    for value in _many(params, "type"):
        if not value or not _TYPE.match(value):
            raise InvalidRequest(
                "type must be an event type (a-z, 0-9, '_', '.') or a prefix ending in '*'",
                field="type",
            )
        if value.endswith("*"):
            prefixes.append(value[:-1])
        else:
            exact.append(value)
    since = _timestamp(params, "since")
    until = _timestamp(params, "until")
    if since is not None and until is not None and since > until:
        raise InvalidRequest("until must not be before since", field="until")
    return Filters(
        user_id=_identifier(params, "user_id"),
        types=tuple(dict.fromkeys(exact)),
        prefixes=tuple(dict.fromkeys(prefixes)),
        since=since,
        until=until,
        request_id=_identifier(params, "request_id"),
    )


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        if len(cursor) > 64:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        prefix, _, digits = raw.partition(":")
        if prefix != "seq" or not digits.isdigit() or not 0 < int(digits) <= _MAX_SEQ:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor is not one this service gave out", field="cursor") from None
    return int(digits)


def parse_page(params: Params) -> Page:
    raw_limit = _one(params, "limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        ok = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4
        if not ok or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise InvalidRequest(
                f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit"
            )
        limit = int(raw_limit)
    cursor = _one(params, "cursor")
    return Page(limit=limit, after_seq=0 if cursor is None else decode_cursor(cursor))


# -- querying ----------------------------------------------------------------------


def where_filters(query: Select[Any], org_id: str, filters: Filters) -> Select[Any]:
    c = _EVENTS.c
    query = query.where(c.org_id == org_id)
    if filters.user_id is not None:
        query = query.where(c.user_id == filters.user_id)
    if filters.types or filters.prefixes:
        # autoescape: '_' in a type name is a LIKE wildcard otherwise.
        query = query.where(
            or_(
                *([c.type.in_(filters.types)] if filters.types else []),
                *(c.type.startswith(p, autoescape=True) for p in filters.prefixes),
            )
        )
    if filters.since is not None:
        query = query.where(c.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(c.occurred_at <= filters.until)
    if filters.request_id is not None:
        query = query.where(
            or_(c.request_id == filters.request_id, c.server_request_id == filters.request_id)
        )
    if filters.max_seq is not None:
        query = query.where(c.seq <= filters.max_seq)
    return query


def page(
    session: Session, org_id: str, filters: Filters, page: Page
) -> tuple[list[Row[Any]], str | None]:
    """One page, oldest first, and the cursor of the next (None on the last page)."""
    query = where_filters(select(_EVENTS), org_id, filters).where(_EVENTS.c.seq > page.after_seq)
    rows = list(session.execute(query.order_by(_EVENTS.c.seq).limit(page.limit + 1)).all())
    if len(rows) > page.limit:
        return rows[: page.limit], encode_cursor(rows[page.limit - 1].seq)
    return rows, None


def count(session: Session, org_id: str, filters: Filters) -> int:
    query = where_filters(select(func.count()).select_from(_EVENTS), org_id, filters)
    return int(session.execute(query).scalar_one())


def last_seq(session: Session, org_id: str) -> int:
    """The newest seq, to pin an export to the chain as it is now."""
    query = select(func.max(_EVENTS.c.seq)).where(_EVENTS.c.org_id == org_id)
    return int(session.execute(query).scalar_one() or 0)


def event_to_dict(ev: AuditEvent | Row[Any]) -> dict[str, Any]:
    """An event as docs/api.md's AuditEvent (its time in milliseconds, as the API shows times)."""
    return {
        "seq": ev.seq,
        "id": ev.id,
        "occurred_at": rfc3339_millis(ev.occurred_at),
        "type": ev.type,
        "outcome": ev.outcome,
        "actor": {
            "principal_id": ev.actor_principal_id,
            "role": ev.actor_role,
            "token_id": ev.actor_token_id,
        },
        "user_id": ev.user_id,
        "request_id": ev.request_id,
        "server_request_id": ev.server_request_id,
        "source_ip": ev.source_ip,
        "user_agent": ev.user_agent,
        "details": ev.details or {},
        "prev_hash": ev.prev_hash,
        "hash": ev.hash,
    }


def record_review(
    uow: UnitOfWork,
    org_id: str,
    type: str,
    outcome: str,
    ctx: audit.Context,
    details: dict[str, Any],
) -> bool:
    """Append a read, export or verification event; False when the chain refused it.

    A chain whose head row was tampered with (an event planted after it) refuses
    the next seq. The review must still answer, since that is how the damage is
    found, so the append runs in a savepoint and its failure is reported instead.
    """
    try:
        with uow.savepoint():
            audit.append(uow, org_id, type, outcome, ctx, details=details)
    except IntegrityError:
        _log.warning(
            "audit review not recorded: the chain head is inconsistent", extra={"org_id": org_id}
        )
        return False
    return True


# -- exports -----------------------------------------------------------------------
