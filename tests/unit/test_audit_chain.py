"""The chain's arithmetic, without a database: canonical form and hash."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.audit import GENESIS_HASH, canonical, chain_hash
from domain.models import AuditEvent

PREV = "ab" * 32


def _event(**changes: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "id": "6f1c5a1e-0000-4000-8000-000000000001",
        "org_id": "acme",
        "seq": 7,
        "occurred_at": datetime(2026, 11, 28, 9, 14, 3, 120000, tzinfo=UTC),
        "type": "backup_codes.regeneration.requested",
        "outcome": "success",
        "actor_principal_id": "alice",
        "actor_role": "user",
        "actor_token_id": "tok-1",
        "user_id": "alice",
        "request_id": "req-1",
        "source_ip": "127.0.0.1",
        "user_agent": "curl/8",
        "details": {"code_count": 5, "reason": "regeneration"},
        "prev_hash": PREV,
    }
    fields.update(changes)
    return AuditEvent(**fields)


GOLDEN = (
    b'{"actor":{"principal_id":"alice","role":"user","token_id":"tok-1"},'
    b'"details":{"code_count":5,"reason":"regeneration"},'
    b'"id":"6f1c5a1e-0000-4000-8000-000000000001","occurred_at":"2026-11-28T09:14:03.120000Z",'
    b'"org_id":"acme","outcome":"success","request_id":"req-1","seq":7,'
    b'"source_ip":"127.0.0.1","type":"backup_codes.regeneration.requested",'
    b'"user_agent":"curl/8","user_id":"alice"}'
)


def test_canonical_form_is_the_documented_bytes() -> None:
    assert canonical(_event()) == GOLDEN


def test_a_server_request_id_enters_the_canonical_form_only_when_set() -> None:
    # Events written before the field existed (null) keep their bytes, hence their hashes.
    assert canonical(_event(server_request_id=None)) == GOLDEN
    with_id = canonical(_event(server_request_id="srv-1"))
    assert with_id == GOLDEN.replace(b'"seq":7,', b'"seq":7,"server_request_id":"srv-1",')


def test_canonical_form_ignores_key_order_of_details() -> None:
    a = _event(details={"a": 1, "b": {"y": 2, "x": 3}})
    b = _event(details={"b": {"x": 3, "y": 2}, "a": 1})
    assert canonical(a) == canonical(b)


def test_canonical_form_is_the_same_instant_in_any_zone() -> None:
    from datetime import timedelta, timezone

    utc = _event()
    paris = _event(occurred_at=utc.occurred_at.astimezone(timezone(timedelta(hours=1))))
    assert canonical(paris) == canonical(utc)


def test_hash_is_sha256_of_canonical_and_prev_hash() -> None:
    expected = hashlib.sha256(GOLDEN + PREV.encode()).hexdigest()
    assert chain_hash(_event(), PREV) == expected


@pytest.mark.parametrize(
    "field, value",
    [
        ("id", "6f1c5a1e-0000-4000-8000-000000000002"),
        ("org_id", "acme2"),
        ("seq", 8),
        ("occurred_at", datetime(2026, 11, 28, 9, 14, 3, 120001, tzinfo=UTC)),
        ("type", "backup_codes.regeneration.refused"),
        ("outcome", "denied"),
        ("actor_principal_id", "mallory"),
        ("actor_role", "admin"),
        ("actor_token_id", "tok-2"),
        ("user_id", "bob"),
        ("request_id", "req-2"),
        ("source_ip", "10.0.0.1"),
        ("user_agent", "curl/9"),
        ("server_request_id", "3f2a9c0d5e6b4a7f8e1d2c3b4a596877"),
        ("details", {"code_count": 6, "reason": "regeneration"}),
        ("actor_principal_id", None),
        ("details", {}),
    ],
)
def test_hash_depends_on_every_field(field: str, value: Any) -> None:
    assert chain_hash(_event(**{field: value}), PREV) != chain_hash(_event(), PREV)


def test_hash_depends_on_the_previous_hash() -> None:
    assert chain_hash(_event(), GENESIS_HASH) != chain_hash(_event(), PREV)


def test_none_and_empty_string_hash_differently() -> None:
    assert chain_hash(_event(user_id=None), PREV) != chain_hash(_event(user_id=""), PREV)
