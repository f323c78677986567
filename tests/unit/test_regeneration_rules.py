"""The pure rules of the regeneration pipeline: JSON shape, timestamps, idempotency."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.fernet import Fernet

from api.representations import regeneration as to_dict
from domain.clock import rfc3339_millis as format_timestamp
from domain.errors import InvalidRequest
from domain.models import Regeneration
from domain.regeneration.idempotency import body_fingerprint, check_idempotency_key, same_body

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEY_OLD = Fernet.generate_key().decode()
KEY_NEW = Fernet.generate_key().decode()


def test_timestamps_are_utc_with_milliseconds_and_z() -> None:
    moment = datetime(2026, 11, 28, 10, 14, 3, 120999, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-11-28T09:14:03.120Z"
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_to_dict_is_exactly_the_api_shape() -> None:
    created = datetime(2026, 11, 28, 9, 14, 3, 120000, tzinfo=UTC)
    reg = Regeneration(
        id="7d3f0c57-93c4-4a5e-9b53-0a3a1d2f4e10",
        status="ready",
        reason="regeneration",
        failure=None,
        code_count=5,
        created_at=created,
        completed_at=created + timedelta(seconds=1),
        expires_at=created + timedelta(minutes=15),
        totp_ciphertext=b"never shown",
        set_id="ABC-DEF",
    )
    body = to_dict(reg)
    assert body == {
        "id": reg.id,
        "status": "ready",
        "reason": "regeneration",
        "failure": None,
        "created_at": "2026-11-28T09:14:03.120Z",
        "completed_at": "2026-11-28T09:14:04.120Z",
        "expires_at": "2026-11-28T09:29:03.120Z",
        "code_count": 5,
        "links": {
            "self": f"/v1/me/backup-codes/regenerations/{reg.id}",
            "sheet": f"/v1/me/backup-codes/regenerations/{reg.id}/sheet",
        },
    }
    json.dumps(body)  # serialisable as it is


def test_to_dict_leaves_unfinished_times_null() -> None:
    reg = Regeneration(
        id="x",
        status="queued",
        reason="enrollment",
        code_count=3,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    body = to_dict(reg)
    assert body["completed_at"] is None and body["expires_at"] is None
    assert RFC3339_MS.match(body["created_at"])


def test_fingerprint_is_keyed_and_never_a_plain_hash_of_the_body() -> None:
    fp = body_fingerprint(KEY_NEW, "123456")
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert fp == body_fingerprint(KEY_NEW, "123456")
    assert fp != body_fingerprint(KEY_NEW, "123457")
    assert fp != body_fingerprint(KEY_OLD, "123456")
    plain = [
        hashlib.sha256(b).hexdigest()
        for b in (b"123456", b'{"totp":"123456"}', b'{"totp": "123456"}')
    ]
    assert fp not in plain
    assert "123456" not in fp


def test_same_body_holds_across_a_key_rotation() -> None:
    stored = body_fingerprint(KEY_OLD, "654321")
    assert same_body(stored, [KEY_NEW, KEY_OLD], "654321")
    assert not same_body(stored, [KEY_NEW, KEY_OLD], "654322")
    assert not same_body(stored, [KEY_NEW], "654321")
    assert not same_body(None, [KEY_NEW], "654321")


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "a\nb", "tab\there"])
def test_bad_idempotency_keys_are_refused_naming_the_header(key: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_idempotency_key(key)
    assert info.value.field == "Idempotency-Key"


@pytest.mark.parametrize("key", [None, "a", "x" * 255, "4f9c2a1e-retry key/1"])
def test_good_idempotency_keys_pass(key: str | None) -> None:
    check_idempotency_key(key)
