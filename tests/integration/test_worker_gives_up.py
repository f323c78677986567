"""A request the worker fails on every time ends `failed: processing-failed` after a
few retries, its TOTP value wiped, instead of coming back every sweep forever."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from domain.audit.types import EventType
from domain.models import AuditEvent, Regeneration
from infra.settings import Settings
from tests.support.api_world import api_world
from workers import tasks


def test_a_request_that_fails_every_time_is_failed_after_the_retries(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "RETRY_BACKOFF_SECONDS", 0.01)
    with api_world(settings) as world:
        org = world.org()
        token, body = world.enroll(org)
        world.await_status(token, body["regeneration"]["id"])
    with api_world(settings, worker=False) as world:
        got = world.call(
            "POST", "/v1/me/backup-codes/regenerations", token, json={"totp": "123456"}
        )
        assert got.status_code == 202, got.text
        reg_id = got.json["id"]
        with world.services.unit_of_work() as uow:
            reg = uow.session.get(Regeneration, reg_id)
            assert reg is not None
            reg.totp_ciphertext = b"not a Fernet token"  # undecryptable, every time
    with api_world(settings) as world:
        done = world.await_status(token, reg_id)
        assert (done["status"], done["failure"]) == ("failed", "processing-failed")
        with world.services.unit_of_work() as uow:
            reg = uow.session.get(Regeneration, reg_id)
            assert reg is not None and reg.totp_ciphertext is None
            failed = uow.session.scalars(
                select(AuditEvent).where(
                    AuditEvent.org_id == org, AuditEvent.type == EventType.REGENERATION_FAILED
                )
            ).all()
        assert [e.details.get("reason") for e in failed] == ["processing-failed"]
        codes = world.call("GET", "/v1/me/mfa", token).json["backup_codes"]
        assert codes is not None and codes["remaining"] == 5  # the first set stands
