"""The service's clock and its two timestamp forms (the only ones).

The API speaks RFC 3339 in UTC with milliseconds; the audit chain hashes its
timestamps with microseconds, a form that must never change (old chains verify
against it).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339_millis(moment: datetime) -> str:
    """2026-11-28T09:14:03.120Z: what the API answers."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def rfc3339_micros(moment: datetime) -> str:
    """2026-11-28T09:14:03.120456Z: the audit chain's form, hashed, never to change."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def whole_millis(moment: datetime) -> datetime:
    """Events and checkpoints are timed to the millisecond, the API's precision, so
    the time an export shows is the time that was hashed."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
