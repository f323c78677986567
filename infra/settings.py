"""Settings.from_env(): the one reader of the environment.

With nothing set, everything runs embedded under ./var/ (SQLite, a filesystem
broker, key files created on first use with mode 0600).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from domain.errors import ConfigurationError
from domain.limits import Limits
from domain.notify.webhook_addresses import AllowPrivate
from domain.notify.webhook_delivery import DEFAULT_SCHEDULE


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigurationError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    if env.get(name):
        return env[name].strip()
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return None


DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_MAIL_FROM = "mfa-backup-codes@localhost"


@dataclass(frozen=True)
class Argon2Params:
    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    # Out of repr: the URLs may hold passwords, and a repr can end up in a log.
    database_url: str = field(repr=False)
    broker_url: str = field(repr=False)
    # Fernet keys, newest first: the first encrypts, all decrypt (rotation).
    secret_keys: tuple[str, ...] = field(repr=False)
    # Raw 32-byte Ed25519 private key for audit checkpoints.
    audit_signing_key: bytes = field(repr=False)
    # The tables' owner, for migrations (`db upgrade`, and `run` where set); on
    # PostgreSQL database_url is then a role that owns nothing, so it cannot
    # switch the audit triggers off. None: database_url migrates too.
    migration_database_url: str | None = field(default=None, repr=False)
    # Each organization's checkpoints, also as append-only JSON lines outside the
    # database (None: var_dir/checkpoints).
    checkpoint_dir: Path | None = None
    # Public halves (raw 32 bytes) of earlier signing keys: their checkpoints still
    # verify, up to the first one the current key signed. Public only: a retired
    # private key kept around could sign forgeries.
    audit_retired_public_keys: tuple[bytes, ...] = ()
    sheet_ttl_seconds: int = 900
    argon2: Argon2Params = Argon2Params()
    totp_issuer: str = "mfa-backup-codes"
    queue_prefix: str = "mfa"
    stale_after_seconds: int = 60
    checkpoint_interval_seconds: int = 300
    # Attempt limits, their defaults from domain.limits.Limits (one place): per
    # source (and TOTP per user) `threshold` in `window`; per user across sources;
    # the consecutive cap; mistyped inputs.
    lockout_threshold: int = Limits.threshold
    lockout_window_seconds: int = Limits.window_seconds
    # The purge (domain.purge): how long rows nothing reads any more are kept.
    outbox_retention_seconds: int = 86400
    # At least 2 days: longer than the 24 h in which an Idempotency-Key answers.
    regeneration_retention_seconds: int = 30 * 86400
    # Never less than the longest window that reads the failure counters.
    auth_failure_retention_seconds: int = 86400
    purge_interval_seconds: int = 3600
    lockout_user_threshold: int = Limits.user_threshold
    lockout_user_window_seconds: int = Limits.user_window_seconds
    lockout_consecutive_cap: int = Limits.consecutive_cap
    mistyped_threshold: int = Limits.mistyped_threshold
    mistyped_window_seconds: int = Limits.mistyped_window_seconds
    # Concurrent argon2 verifications a process runs, and how long one waits for a
    # slot before answering 503 busy.
    verify_slots: int = 4
    verify_slot_wait_ms: int = 2000
    log_level: str = "INFO"
    log_json: bool = True
    # 0: off. A worker has no HTTP server; this port serves its Prometheus metrics.
    worker_metrics_port: int = 0
    # 0: off. The API's metrics, added up over its processes, on their own port (the
    # API port does not serve them); the gunicorn master listens there.
    api_metrics_port: int = 0
    # Reverse proxies whose X-Forwarded-For is believed (the audit trail's source IP).
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    # Mails to users (domain.notify): the address links point at, the sender, and the
    # SMTP server (None: written to a Maildir under var_dir/mail). The URL may hold a
    # password: out of repr.
    public_url: str = DEFAULT_PUBLIC_URL
    mail_from: str = DEFAULT_MAIL_FROM
    smtp_url: str | None = field(default=None, repr=False)
    # A CA bundle the SMTP server's certificate is checked against (None: the system's).
    smtp_ca_file: Path | None = None
    # Which non-public addresses webhooks may reach: none, loopback (and http://; the
    # embedded default) or private (RFC 1918 and ULA too). Never link-local or CGNAT.
    webhook_allow_private: AllowPrivate = AllowPrivate.NONE
    # Seconds between a failed delivery attempt and the next; after the last, dead.
    webhook_retry_schedule: tuple[int, ...] = DEFAULT_SCHEDULE

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return self.var_dir / "broker"

    @property
    def mail_folder(self) -> Path:
        """The Maildir mails are written to when no SMTP server is set."""
        return self.var_dir / "mail"

    @property
    def checkpoint_folder(self) -> Path:
        return self.checkpoint_dir or self.var_dir / "checkpoints"

    @property
    def migration_url(self) -> str:
        """The URL migrations run as: the owner where one is set."""
        return self.migration_database_url or self.database_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        merged: dict[str, str] = {}
        if dotenv is not None and dotenv.is_file():
            merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        merged.update(os.environ if env is None else env)
        var_dir = Path(merged.get("MFA_VAR_DIR", "var")).absolute()

        # URLs carry passwords: like the keys, they may come from *_FILE secrets.
        database_url = _secret(merged, "MFA_DATABASE_URL") or f"sqlite:///{var_dir / 'mfa.db'}"
        broker_url = _secret(merged, "MFA_BROKER_URL") or "filesystem://"
        embedded = database_url.startswith("sqlite") or broker_url.startswith("filesystem://")

        secret = _secret(merged, "MFA_SECRET_KEY")
        if secret is None:
            secret = _key_file(var_dir / "secret.key", _new_fernet_key, embedded, "MFA_SECRET_KEY")
        keys = tuple(k.strip() for k in secret.split(",") if k.strip())
        _check_fernet_keys(keys)

        signing = _secret(merged, "MFA_AUDIT_SIGNING_KEY")
        if signing is None:
            signing = _key_file(
                var_dir / "audit-signing.key", _new_signing_key, embedded, "MFA_AUDIT_SIGNING_KEY"
            )
        signing_key = _decode_signing_key(signing)
        retired = tuple(
            _decode_key(k, "MFA_AUDIT_RETIRED_PUBLIC_KEYS")
            for k in merged.get("MFA_AUDIT_RETIRED_PUBLIC_KEYS", "").split(",")
            if k.strip()
        )

        return cls(
            var_dir=var_dir,
            database_url=database_url,
            broker_url=broker_url,
            migration_database_url=_secret(merged, "MFA_MIGRATION_DATABASE_URL"),
            checkpoint_dir=(
                Path(merged["MFA_CHECKPOINT_DIR"]).absolute()
                if merged.get("MFA_CHECKPOINT_DIR")
                else None
            ),
            secret_keys=keys,
            audit_signing_key=signing_key,
            audit_retired_public_keys=retired,
            sheet_ttl_seconds=_int(merged, "MFA_SHEET_TTL_SECONDS", 900, 10, 7 * 86400),
            argon2=Argon2Params(
                memory_kib=_int(merged, "MFA_ARGON2_MEMORY_KIB", 19 * 1024, 8, 4 * 1024 * 1024),
                time_cost=_int(merged, "MFA_ARGON2_TIME_COST", 2, 1, 100),
                parallelism=_int(merged, "MFA_ARGON2_PARALLELISM", 1, 1, 64),
            ),
            totp_issuer=merged.get("MFA_TOTP_ISSUER", "mfa-backup-codes"),
            queue_prefix=merged.get("MFA_QUEUE_PREFIX", "mfa"),
            stale_after_seconds=_int(merged, "MFA_STALE_AFTER_SECONDS", 60, 1, 86400),
            checkpoint_interval_seconds=_int(
                merged, "MFA_CHECKPOINT_INTERVAL_SECONDS", 300, 1, 86400
            ),
            outbox_retention_seconds=_int(
                merged, "MFA_OUTBOX_RETENTION_SECONDS", 86400, 60, 365 * 86400
            ),
            regeneration_retention_seconds=_int(
                merged, "MFA_REGENERATION_RETENTION_SECONDS", 30 * 86400, 2 * 86400, 3650 * 86400
            ),
            auth_failure_retention_seconds=_int(
                merged, "MFA_AUTH_FAILURE_RETENTION_SECONDS", 86400, 60, 3650 * 86400
            ),
            purge_interval_seconds=_int(merged, "MFA_PURGE_INTERVAL_SECONDS", 3600, 60, 86400),
            log_level=merged.get("MFA_LOG_LEVEL", "INFO").upper(),
            log_json=merged.get("MFA_LOG_FORMAT", "json").lower() != "text",
            worker_metrics_port=_int(merged, "MFA_WORKER_METRICS_PORT", 0, 0, 65535),
            api_metrics_port=_int(merged, "MFA_API_METRICS_PORT", 0, 0, 65535),
            trusted_proxies=_networks(merged, "MFA_TRUSTED_PROXIES"),
            verify_slots=_int(merged, "MFA_VERIFY_SLOTS", 4, 1, 1024),
            verify_slot_wait_ms=_int(merged, "MFA_VERIFY_SLOT_WAIT_MS", 2000, 0, 60000),
            public_url=_public_url(merged.get("MFA_PUBLIC_URL") or DEFAULT_PUBLIC_URL),
            mail_from=_mail_from(merged.get("MFA_MAIL_FROM") or DEFAULT_MAIL_FROM),
            smtp_url=_smtp_url(_secret(merged, "MFA_SMTP_URL")),
            smtp_ca_file=(
                Path(merged["MFA_SMTP_CA_FILE"]).absolute()
                if merged.get("MFA_SMTP_CA_FILE")
                else None
            ),
            webhook_allow_private=_allow_private(merged, embedded),
            webhook_retry_schedule=_schedule(merged, "MFA_WEBHOOK_RETRY_SCHEDULE"),
        )


def _allow_private(env: Mapping[str, str], embedded: bool) -> AllowPrivate:
    name = "MFA_WEBHOOK_ALLOW_PRIVATE"
    default = AllowPrivate.LOOPBACK if embedded else AllowPrivate.NONE
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("", "none", "no", "off"):
        return AllowPrivate.NONE
    try:
        return AllowPrivate(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be loopback, private or none, got {raw!r}") from None


def _schedule(env: Mapping[str, str], name: str) -> tuple[int, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_SCHEDULE
    try:
        waits = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigurationError(f"{name} must be seconds separated by commas") from None
    if not 1 <= len(waits) <= 50 or any(not 0 <= w <= 7 * 86400 for w in waits):
        raise ConfigurationError(f"{name}: 1 to 50 waits, each 0 to 604800 seconds")
    return waits


def _networks(env: Mapping[str, str], name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    networks = []
    for part in env.get(name, "").split(","):
        if part.strip():
            try:
                networks.append(ip_network(part.strip(), strict=False))
            except ValueError:
                raise ConfigurationError(
                    f"{name}: {part.strip()!r} is not an IP address or network"
                ) from None
    return tuple(networks)


def _public_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigurationError("MFA_PUBLIC_URL must be an http(s) URL without a query")
    return value.strip().rstrip("/")


def _mail_from(value: str) -> str:
    text = value.strip()
    if any(ch in text for ch in "\r\n") or "@" not in text:
        raise ConfigurationError("MFA_MAIL_FROM must be an address (one line)")
    return text


def _smtp_url(value: str | None) -> str | None:
    """smtp://[user:pass@]host[:port] or smtps://...; the error never repeats the URL,
    which may hold a password."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigurationError("MFA_SMTP_URL is not a URL") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigurationError("MFA_SMTP_URL must be smtp://host:port or smtps://host:port")
    del port
    return value


def _new_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _new_signing_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


def _key_file(path: Path, make: object, embedded: bool, name: str) -> str:
    """Read the embedded default's key file, creating it (mode 0600) on first use."""
    if path.is_file():
        return path.read_text().strip()
    if not embedded:
        raise ConfigurationError(
            f"{name} (or {name}_FILE) must be set outside the embedded default"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    assert callable(make)
    value = str(make())
    # O_EXCL: two processes starting together must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _check_fernet_keys(keys: tuple[str, ...]) -> None:
    if not keys:
        raise ConfigurationError("MFA_SECRET_KEY is empty")
    for i, key in enumerate(keys):
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigurationError(
                f"MFA_SECRET_KEY entry {i + 1} is not a Fernet key (32 url-safe base64 bytes)"
            )


def _decode_signing_key(value: str) -> bytes:
    if "," in value:
        raise ConfigurationError(
            "MFA_AUDIT_SIGNING_KEY holds one key; put the public halves of earlier keys in "
            "MFA_AUDIT_RETIRED_PUBLIC_KEYS (mfa-codes audit public-key --raw)"
        )
    return _decode_key(value, "MFA_AUDIT_SIGNING_KEY")


def _decode_key(value: str, name: str) -> bytes:
    """32 raw bytes, base64-encoded (an Ed25519 private or public key)."""
    try:
        raw = base64.b64decode(value.strip().encode(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigurationError(f"{name} must be 32 raw bytes, base64-encoded")
    return raw
