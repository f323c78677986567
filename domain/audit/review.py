"""Reviewing the trail as use cases: each read, export and verification is recorded
in the same chain it looks at (API and CLI alike)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Row

from domain import audit
from domain.audit.query import Filters, Page, count, last_seq, page, record_review
from domain.audit.types import EventType, Outcome
from domain.audit.verify import Verification, verify_chain
from domain.ports import AuditSettings
from domain.uow import UnitOfWork


def read_page(
    uow: UnitOfWork, org_id: str, filters: Filters, pagination: Page, ctx: audit.Context
) -> tuple[list[Row[Any]], str | None]:
    """One page of events and the cursor of the next; the read is recorded."""
    rows, next_cursor = page(uow.session, org_id, filters, pagination)
    record_review(
        uow,
        org_id,
        EventType.AUDIT_READ,
        Outcome.SUCCESS,
        ctx,
        {"filters": filters.summary(), "returned": len(rows), "next_page": bool(next_cursor)},
    )
    return rows, next_cursor


def start_export(
    uow: UnitOfWork, org_id: str, filters: Filters, fmt: str, via: str, ctx: audit.Context
) -> tuple[Filters, int]:
    """The selection pinned to the chain as it is now, and its size; recorded before
    the first byte goes out, so an interrupted export is on file too (the export
    event itself comes after the selection)."""
    pinned = replace(filters, max_seq=last_seq(uow.session, org_id))
    total = count(uow.session, org_id, pinned)
    record_review(
        uow,
        org_id,
        EventType.AUDIT_EXPORTED,
        Outcome.SUCCESS,
        ctx,
        {"filters": filters.summary(), "count": total, "format": fmt, "via": via},
    )
    return pinned, total


def verify_recorded(
    uow: UnitOfWork,
    org_id: str,
    settings: AuditSettings,
    ctx: audit.Context,
    *,
    expect: tuple[int, str] | None = None,
) -> Verification:
    """The chain recomputed; the verification is recorded, failed or not."""
    result = verify_chain(uow.session, org_id, settings, expect=expect)
    record_review(
        uow,
        org_id,
        EventType.AUDIT_VERIFIED,
        Outcome.SUCCESS if result.ok else Outcome.FAILURE,
        ctx,
        {
            "ok": result.ok,
            "events_checked": result.events_checked,
            "first_bad_seq": result.first_bad_seq,
        },
    )
    return result
