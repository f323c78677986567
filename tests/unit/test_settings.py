from __future__ import annotations

import base64
import stat
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from api.errors import status_of
from domain.errors import Busy, ConfigurationError
from domain.slots import VerificationSlots
from infra.settings import Settings


def test_nothing_set_runs_embedded_under_var_with_key_files_0600(tmp_path: Path) -> None:
    s = Settings.from_env(env={"MFA_VAR_DIR": str(tmp_path / "var")}, dotenv=None)
    assert s.database_url == f"sqlite:///{tmp_path / 'var' / 'mfa.db'}"
    assert s.embedded_broker and s.is_sqlite
    assert s.sheet_ttl_seconds == 900
    for name in ("secret.key", "audit-signing.key"):
        mode = stat.S_IMODE((tmp_path / "var" / name).stat().st_mode)
        assert mode == 0o600


def test_key_files_are_reused_on_the_next_start(tmp_path: Path) -> None:
    env = {"MFA_VAR_DIR": str(tmp_path)}
    first = Settings.from_env(env=env, dotenv=None)
    second = Settings.from_env(env=env, dotenv=None)
    assert first.secret_keys == second.secret_keys
    assert first.audit_signing_key == second.audit_signing_key


def test_deployment_without_keys_is_refused(tmp_path: Path) -> None:
    env = {
        "MFA_VAR_DIR": str(tmp_path),
        "MFA_DATABASE_URL": "postgresql+psycopg://db/mfa",
        "MFA_BROKER_URL": "amqp://mq//",
    }
    with pytest.raises(ConfigurationError, match="MFA_SECRET_KEY"):
        Settings.from_env(env=env, dotenv=None)


def test_keys_from_files_and_rotation_list(tmp_path: Path) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    key_file = tmp_path / "k"
    key_file.write_text(f"{new},{old}\n")
    s = Settings.from_env(
        env={"MFA_VAR_DIR": str(tmp_path), "MFA_SECRET_KEY_FILE": str(key_file)}, dotenv=None
    )
    assert s.secret_keys == (new, old)


def test_bad_key_names_the_variable_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(
            env={"MFA_VAR_DIR": str(tmp_path), "MFA_SECRET_KEY": "hunter2-not-a-key"}, dotenv=None
        )
    assert "MFA_SECRET_KEY" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("value", ["abc", "0", "999999999"])
def test_out_of_range_numbers_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigurationError, match="MFA_SHEET_TTL_SECONDS"):
        Settings.from_env(
            env={"MFA_VAR_DIR": str(tmp_path), "MFA_SHEET_TTL_SECONDS": value}, dotenv=None
        )


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("MFA_SHEET_TTL_SECONDS=120\nMFA_TOTP_ISSUER=FromFile\n")
    s = Settings.from_env(
        env={"MFA_VAR_DIR": str(tmp_path), "MFA_TOTP_ISSUER": "FromEnv"}, dotenv=dotenv
    )
    assert s.sheet_ttl_seconds == 120
    assert s.totp_issuer == "FromEnv"


def test_repr_hides_secrets(tmp_path: Path) -> None:
    s = Settings.from_env(env={"MFA_VAR_DIR": str(tmp_path)}, dotenv=None)
    assert s.secret_keys[0] not in repr(s)


def test_database_and_broker_urls_may_come_from_secret_files(tmp_path: Path) -> None:
    db_file = tmp_path / "db-url"
    db_file.write_text("postgresql+psycopg://mfa:s3cret@db:5432/mfa\n")
    broker_file = tmp_path / "broker-url"
    broker_file.write_text("amqp://mfa:s3cret@mq:5672//\n")
    s = Settings.from_env(
        env={
            "MFA_VAR_DIR": str(tmp_path / "var"),
            "MFA_DATABASE_URL_FILE": str(db_file),
            "MFA_BROKER_URL_FILE": str(broker_file),
            "MFA_SECRET_KEY": Fernet.generate_key().decode(),
            "MFA_AUDIT_SIGNING_KEY": base64.b64encode(bytes(32)).decode(),
        },
        dotenv=None,
    )
    assert s.database_url == "postgresql+psycopg://mfa:s3cret@db:5432/mfa"
    assert s.broker_url == "amqp://mfa:s3cret@mq:5672//"
    assert not s.embedded_broker


def test_worker_metrics_port_is_off_by_default_and_bounded(tmp_path: Path) -> None:
    base = {"MFA_VAR_DIR": str(tmp_path / "var")}
    assert Settings.from_env(env=base, dotenv=None).worker_metrics_port == 0
    assert (
        Settings.from_env(
            env={**base, "MFA_WORKER_METRICS_PORT": "9100"}, dotenv=None
        ).worker_metrics_port
        == 9100
    )
    with pytest.raises(ConfigurationError):
        Settings.from_env(env={**base, "MFA_WORKER_METRICS_PORT": "70000"}, dotenv=None)


def test_api_metrics_port_is_off_by_default_and_bounded(tmp_path: Path) -> None:
    base = {"MFA_VAR_DIR": str(tmp_path / "var")}
    assert Settings.from_env(env=base, dotenv=None).api_metrics_port == 0
    got = Settings.from_env(env={**base, "MFA_API_METRICS_PORT": "9101"}, dotenv=None)
    assert got.api_metrics_port == 9101
    with pytest.raises(ConfigurationError):
        Settings.from_env(env={**base, "MFA_API_METRICS_PORT": "70000"}, dotenv=None)


def test_repr_hides_urls_and_keys(tmp_path: Path) -> None:
    s = Settings.from_env(
        env={
            "MFA_VAR_DIR": str(tmp_path / "var"),
            "MFA_DATABASE_URL": "postgresql+psycopg://mfa:hunter2@db/mfa",
            "MFA_BROKER_URL": "amqp://mfa:hunter3@mq//",
            "MFA_SECRET_KEY": (key := Fernet.generate_key().decode()),
            "MFA_AUDIT_SIGNING_KEY": base64.b64encode(bytes(32)).decode(),
        },
        dotenv=None,
    )
    shown = repr(s)
    assert "hunter2" not in shown and "hunter3" not in shown and key not in shown


def test_trusted_proxies_are_parsed_as_networks_and_bad_ones_refused(tmp_path: Path) -> None:
    base = {"MFA_VAR_DIR": str(tmp_path / "var")}
    s = Settings.from_env(
        env={**base, "MFA_TRUSTED_PROXIES": "10.0.0.5, 172.16.0.0/12"}, dotenv=None
    )
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.5/32", "172.16.0.0/12"]
    assert Settings.from_env(env=base, dotenv=None).trusted_proxies == ()
    with pytest.raises(ConfigurationError, match="MFA_TRUSTED_PROXIES"):
        Settings.from_env(env={**base, "MFA_TRUSTED_PROXIES": "proxy.local"}, dotenv=None)


def test_purge_retentions_have_defaults_and_outlast_what_reads_them(tmp_path: Path) -> None:
    base = {"MFA_VAR_DIR": str(tmp_path / "var")}
    s = Settings.from_env(env=base, dotenv=None)
    assert (s.outbox_retention_seconds, s.regeneration_retention_seconds) == (86400, 30 * 86400)
    assert (s.auth_failure_retention_seconds, s.purge_interval_seconds) == (86400, 3600)
    changed = Settings.from_env(
        env={
            **base,
            "MFA_OUTBOX_RETENTION_SECONDS": "3600",
            "MFA_REGENERATION_RETENTION_SECONDS": "172800",
            "MFA_AUTH_FAILURE_RETENTION_SECONDS": "7200",
            "MFA_PURGE_INTERVAL_SECONDS": "600",
        },
        dotenv=None,
    )
    assert (changed.outbox_retention_seconds, changed.regeneration_retention_seconds) == (
        3600,
        172800,
    )
    assert (changed.auth_failure_retention_seconds, changed.purge_interval_seconds) == (7200, 600)
    # A regeneration kept less than 2 days could forget an Idempotency-Key inside its 24 h.
    with pytest.raises(ConfigurationError, match="MFA_REGENERATION_RETENTION_SECONDS"):
        Settings.from_env(env={**base, "MFA_REGENERATION_RETENTION_SECONDS": "86400"}, dotenv=None)
    with pytest.raises(ConfigurationError, match="MFA_PURGE_INTERVAL_SECONDS"):
        Settings.from_env(env={**base, "MFA_PURGE_INTERVAL_SECONDS": "0"}, dotenv=None)


def test_verification_slots_and_their_wait_are_configurable(tmp_path: Path) -> None:
    default = Settings.from_env(env={"MFA_VAR_DIR": str(tmp_path / "var")}, dotenv=None)
    assert (default.verify_slots, default.verify_slot_wait_ms) == (4, 2000)
    env = {
        "MFA_VAR_DIR": str(tmp_path / "var"),
        "MFA_VERIFY_SLOTS": "1",
        "MFA_VERIFY_SLOT_WAIT_MS": "50",
    }
    chosen = Settings.from_env(env=env, dotenv=None)
    assert (chosen.verify_slots, chosen.verify_slot_wait_ms) == (1, 50)


def test_a_verification_waits_for_a_free_slot_then_is_busy() -> None:
    slots = VerificationSlots(1, 0.05)
    with slots.held():
        started = time.monotonic()
        with pytest.raises(Busy) as busy, slots.held():
            pass
        assert time.monotonic() - started >= 0.05
    assert (status_of(busy.value), busy.value.slug, busy.value.retry_after) == (503, "busy", 1)
    with slots.held():  # released: free again
        pass
