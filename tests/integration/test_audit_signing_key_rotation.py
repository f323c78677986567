"""Rotating the audit signing key: MFA_AUDIT_SIGNING_KEY holds the one key that signs;
MFA_AUDIT_RETIRED_PUBLIC_KEYS the public halves of earlier ones, whose checkpoints
verify up to the first checkpoint of the current key, and never after it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from cli.main import cli
from domain import accounts, audit
from domain.audit.checkpoints import checkpoint_org
from domain.audit.verify import verify_chain
from domain.errors import ConfigurationError
from infra.db import utcnow
from infra.migrate import upgrade
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import unique
from tests.support.settings import make_settings


def _keypair() -> tuple[str, str]:
    """(private, public), each base64 of 32 raw bytes."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


class Chain:
    """One organization's chain in a database of its own, checkpointed under chosen keys."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.url = f"sqlite:///{tmp_path / 'rotation.db'}"
        upgrade(self.url)
        self.org = unique()
        self.users = 0

    def settings(self, signing: str, retired: str = "") -> Settings:
        return make_settings(
            self.tmp_path,
            MFA_DATABASE_URL=self.url,
            MFA_AUDIT_SIGNING_KEY=signing,
            MFA_AUDIT_RETIRED_PUBLIC_KEYS=retired,
        )

    def grow_and_checkpoint(self, signing: str) -> None:
        settings = self.settings(signing)
        services = Services.build(settings)
        try:
            with services.unit_of_work() as uow:
                if self.users == 0:
                    accounts.create_org(uow, self.org, audit.CLI)
                self.users += 1
                accounts.create_user(uow, self.org, f"u{self.users}", None, audit.CLI)
            with services.unit_of_work() as uow:
                assert checkpoint_org(uow, settings, self.org, utcnow())
        finally:
            services.close()

    def verify(self, signing: str, retired: str = "") -> tuple[bool, str | None]:
        settings = self.settings(signing, retired)
        services = Services.build(settings)
        try:
            with services.unit_of_work() as uow:
                result = verify_chain(uow.session, self.org, settings)
            return result.ok, result.reason
        finally:
            services.close()


def test_checkpoints_of_a_retired_key_verify_when_its_public_half_is_listed(
    tmp_path: Path,
) -> None:
    (old, old_public), (new, _) = _keypair(), _keypair()
    chain = Chain(tmp_path)
    chain.grow_and_checkpoint(old)
    chain.grow_and_checkpoint(new)
    assert chain.verify(new, retired=old_public) == (True, None)


def test_a_retired_key_not_listed_is_named_as_unknown(tmp_path: Path) -> None:
    (old, _), (new, _) = _keypair(), _keypair()
    chain = Chain(tmp_path)
    chain.grow_and_checkpoint(old)
    ok, reason = chain.verify(new)
    assert ok is False and reason is not None and "unknown key" in reason


def test_a_retired_key_cannot_vouch_for_anything_after_the_current_key_took_over(
    tmp_path: Path,
) -> None:
    # Whoever holds a leaked old private key signs a checkpoint after the rotation.
    (old, old_public), (new, _) = _keypair(), _keypair()
    chain = Chain(tmp_path)
    chain.grow_and_checkpoint(old)
    chain.grow_and_checkpoint(new)
    chain.grow_and_checkpoint(old)
    ok, reason = chain.verify(new, retired=old_public)
    assert ok is False and reason is not None and "retired key" in reason


def test_the_signing_key_variable_takes_one_key_and_says_where_old_ones_go(
    tmp_path: Path,
) -> None:
    (one, _), (two, _) = _keypair(), _keypair()
    with pytest.raises(ConfigurationError, match="MFA_AUDIT_RETIRED_PUBLIC_KEYS"):
        make_settings(tmp_path, MFA_AUDIT_SIGNING_KEY=f"{one},{two}")


def test_public_key_raw_prints_what_the_retired_list_takes(tmp_path: Path) -> None:
    private, public = _keypair()
    env = {"MFA_VAR_DIR": str(tmp_path / "var"), "MFA_AUDIT_SIGNING_KEY": private}
    result = CliRunner().invoke(cli, ["audit", "public-key", "--raw"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == public
