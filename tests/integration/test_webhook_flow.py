"""A whole flow over HTTP with a real worker (embedded broker and SQLite), a webhook
listening to everything and a real receiver on 127.0.0.1: enroll, first sheet, sign
in with a code, regenerate, admin revoke. The receiver gets exactly the contract's
events for it, each verified with the standardwebhooks library, and ordered by
audit_seq they are the flow's order; no payload holds a code or the secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world
from tests.support.polling import await_true
from tests.support.receiver import receiver
from tests.support.settings import make_settings

EXPECTED = [
    "mfa.enrolled",
    "backup_codes.generated",  # the first set, queued by the enrollment
    "backup_codes.used",
    "backup_codes.generated",
    "backup_codes.revoked",
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path)
    upgrade(settings.database_url)
    with api_world(settings) as built:
        yield built


@pytest.mark.timeout(120)
def test_a_whole_flow_reaches_the_receiver_signed_and_in_order(world: ApiWorld) -> None:
    org_id = world.org()
    admin = world.token(org_id, "root", "admin")
    service = world.token(org_id, "signin", "service")
    with receiver() as rx:
        made = world.call("POST", "/v1/org/webhooks", admin, {"url": rx.url, "events": ["*"]})
        assert made.status_code == 201, made.text
        secret = made.json["secret"]

        token, confirmed = world.enroll(org_id, "alice")
        first = confirmed["regeneration"]["id"]
        world.await_status(token, first)
        codes = [c for c in world.sheet_text(token, first) if "-" in c and len(c) >= 14]
        code = codes[-1].split()[-1]
        used = world.call("POST", "/v1/users/alice/backup-codes/verify", service, {"code": code})
        assert used.status_code == 200 and used.json["accepted"] is True, used.text
        again = world.call(
            "POST",
            "/v1/me/backup-codes/regenerations",
            token,
            {"totp": world.totp(org_id, "alice", offset_steps=1)},
        )
        assert again.status_code == 202, again.text
        world.await_status(token, again.json["id"])
        revoked = world.call("POST", "/v1/users/alice/backup-codes/revocation", admin)
        assert revoked.status_code == 204

        await_true(lambda: len(rx.requests()) >= len(EXPECTED) or None, 60, "every delivery")
        bodies: list[dict[str, Any]] = [
            StandardWebhook(secret).verify(got.body, got.headers) for got in rx.requests()
        ]
        ordered = sorted(bodies, key=lambda b: b["data"]["audit_seq"])
        assert [b["type"] for b in ordered] == EXPECTED
        assert all(b["data"]["org"] == org_id for b in bodies)
        assert all(b["data"]["user_id"] == "alice" for b in bodies)
        ids = [got.headers["webhook-id"] for got in rx.requests()]
        assert len(set(ids)) == len(ids)
        wire = b" ".join(got.body for got in rx.requests()).decode()
        for secretive in [secret, *codes]:
            assert secretive.split()[-1] not in wire
        assert code.replace("-", "") not in wire.replace("-", "")
        assert json.loads(rx.requests()[0].body)  # plain JSON bodies
