"""Key rotation: after `rotate_all` with (new, old), the new key alone decrypts everything."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from domain import accounts, audit
from domain.audit.types import EventType
from domain.crypto import SecretBox, SecretBoxError
from domain.key_rotation import rotate_all
from domain.models import AuditEvent, Regeneration, Sheet, TotpEnrollment
from infra.migrate import upgrade
from infra.services import Services
from tests.support.settings import make_settings


def test_rotation_moves_every_secret_to_the_new_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = Services.build(make_settings(tmp_path, MFA_SECRET_KEY=old))
    upgrade(before.settings.database_url)
    now = datetime.now(UTC)
    with before.unit_of_work() as uow:
        accounts.create_org(uow, "acme", audit.CLI)
        users = [accounts.create_user(uow, "acme", f"u{i}", None, audit.CLI) for i in range(7)]
        for user in users:
            uow.session.add(
                TotpEnrollment(user_id=user.id, secret_ciphertext=before.box.encrypt(b"S" * 32))
            )
        reg = Regeneration(
            org_id="acme",
            user_id=users[0].id,
            reason="regeneration",
            code_count=5,
            accepted_at=now,
            totp_ciphertext=before.box.encrypt(b"123456"),
        )
        uow.session.add(reg)
        uow.session.flush()
        uow.session.add(
            Sheet(
                regeneration_id=reg.id,
                pdf_ciphertext=before.box.encrypt(b"%PDF"),
                text_ciphertext=before.box.encrypt(b"codes"),
                expires_at=now,
            )
        )
    before.close()

    during = Services.build(make_settings(tmp_path, MFA_SECRET_KEY=f"{new},{old}"))
    seen: list[int] = []
    rotated = rotate_all(
        during.unit_of_work, during.box, audit.CLI, keys_configured=2, batch=3, progress=seen.append
    )
    during.close()
    assert rotated == 7 + 1 + 2
    assert sum(seen) == rotated

    only_new, only_old = SecretBox([new]), SecretBox([old])
    after = Services.build(make_settings(tmp_path, MFA_SECRET_KEY=new))
    with after.unit_of_work() as uow:
        secrets = uow.session.execute(select(TotpEnrollment.secret_ciphertext)).scalars().all()
        assert [only_new.decrypt(s) for s in secrets] == [b"S" * 32] * 7
        sheet = uow.session.execute(select(Sheet)).scalar_one()
        assert only_new.decrypt(sheet.text_ciphertext) == b"codes"
        pending = uow.session.execute(select(Regeneration.totp_ciphertext)).scalar_one()
        assert pending is not None and only_new.decrypt(pending) == b"123456"
        with pytest.raises(SecretBoxError):
            only_old.decrypt(sheet.pdf_ciphertext)
        rekeyed = uow.session.scalars(
            select(AuditEvent).where(AuditEvent.type == EventType.SECRETS_REKEYED)
        ).all()
        assert [(e.org_id, e.details) for e in rekeyed] == [("acme", {"keys_configured": 2})]
    after.close()


def test_a_rotation_that_fails_records_no_rekeyed_event(tmp_path: Path) -> None:
    """The event commits with the last re-encrypting transaction, so a rotation that
    stops half-way (a secret under a key no longer configured) leaves none."""
    stray, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    services = Services.build(make_settings(tmp_path, MFA_SECRET_KEY=new))
    upgrade(services.settings.database_url)
    try:
        with services.unit_of_work() as uow:
            accounts.create_org(uow, "acme", audit.CLI)
            user = accounts.create_user(uow, "acme", "alice", None, audit.CLI)
            uow.session.add(
                TotpEnrollment(user_id=user.id, secret_ciphertext=SecretBox([stray]).encrypt(b"S"))
            )
        with pytest.raises(SecretBoxError):
            rotate_all(services.unit_of_work, services.box, audit.CLI, keys_configured=1)
        with services.unit_of_work() as uow:
            rekeyed = uow.session.scalars(
                select(AuditEvent).where(AuditEvent.type == EventType.SECRETS_REKEYED)
            ).all()
            assert rekeyed == []
    finally:
        services.close()
