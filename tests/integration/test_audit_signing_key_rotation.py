"""Rotating the audit signing key: MFA_AUDIT_SIGNING_KEY is a comma list, newest
first; the first signs, every listed key verifies the checkpoints it signed."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from domain import accounts, audit
from domain.audit_checkpoint import checkpoint_org
from domain.audit_verify import verify_chain
from domain.db import utcnow
from domain.migrate import upgrade
from domain.services import Services
from tests.conftest import make_settings, unique


def _key() -> str:
    raw = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    return base64.b64encode(raw).decode()


def _signed_chain(tmp_path: Path, key: str) -> tuple[str, str]:
    """A database with one organization whose head is checkpointed by `key`."""
    settings = make_settings(tmp_path, MFA_AUDIT_SIGNING_KEY=key)
    upgrade(settings.database_url)
    services = Services.build(settings)
    org = unique()
    with services.unit_of_work() as session:
        accounts.create_org(session, org, audit.CLI)
        accounts.create_user(session, org, "alice", None, audit.CLI)
    with services.unit_of_work() as session:
        checkpoint_org(session, settings, org, utcnow())
    services.close()
    return org, settings.database_url


def _verify(tmp_path: Path, database_url: str, org: str, keys: str) -> tuple[bool, str | None]:
    settings = make_settings(tmp_path, MFA_DATABASE_URL=database_url, MFA_AUDIT_SIGNING_KEY=keys)
    services = Services.build(settings)
    try:
        with services.unit_of_work() as session:
            result = verify_chain(session, org, settings)
        return result.ok, result.reason
    finally:
        services.close()


def test_checkpoints_of_a_retired_key_verify_while_it_is_listed(tmp_path: Path) -> None:
    old, new = _key(), _key()
    org, url = _signed_chain(tmp_path, old)
    assert _verify(tmp_path, url, org, f"{new},{old}")[0] is True


def test_checkpoints_of_a_key_no_longer_listed_do_not_verify(tmp_path: Path) -> None:
    old, new = _key(), _key()
    org, url = _signed_chain(tmp_path, old)
    ok, reason = _verify(tmp_path, url, org, new)
    assert ok is False
    assert reason is not None and "signature" in reason


def test_the_newest_key_signs_new_checkpoints(tmp_path: Path) -> None:
    old, new = _key(), _key()
    org, url = _signed_chain(tmp_path, old)
    settings = make_settings(tmp_path, MFA_DATABASE_URL=url, MFA_AUDIT_SIGNING_KEY=f"{new},{old}")
    services = Services.build(settings)
    with services.unit_of_work() as session:
        accounts.create_user(session, org, "bob", None, audit.CLI)
    with services.unit_of_work() as session:
        checkpoint_org(session, settings, org, utcnow())
    services.close()
    # With only the new key the latest checkpoint verifies, the old one does not.
    ok, reason = _verify(tmp_path, url, org, new)
    assert ok is False and reason is not None and "seq 2" in reason
    assert _verify(tmp_path, url, org, f"{new},{old}")[0] is True
