"""db, org, token, ui-link: setting up organizations and who may call the API (users:
cli/users.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

from cli.common import handle_errors, load_services
from domain import accounts, audit, tokens, ui_sessions
from domain.clock import rfc3339_micros, utcnow
from domain.key_rotation import rotate_all
from infra.migrate import upgrade_settings
from infra.settings import Settings


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@handle_errors
def db_upgrade() -> None:
    """Apply every pending migration (as MFA_MIGRATION_DATABASE_URL where set), then
    grant the MFA_DATABASE_URL role its privileges."""
    settings = Settings.from_env()
    upgrade_settings(settings)
    click.echo("database is at the latest schema")


@click.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("org_id")
@handle_errors
def org_create(org_id: str) -> None:
    """Create ORG with the default policy (backup codes on, 5 codes)."""
    services = load_services()
    with services.unit_of_work() as uow:
        accounts.create_org(uow, org_id, audit.CLI)
    click.echo(f"organization {org_id} created (backup codes on, 5 codes)")


@click.group()
def token() -> None:
    """API tokens."""


_TTL = re.compile(r"^([0-9]{1,9})([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(value: str | None) -> timedelta | None:
    """N[smhd] (seconds without a unit), 60 s to 365 d; None for no expiry."""
    if value is None:
        return None
    match = _TTL.match(value.strip())
    if match is None:
        raise click.BadParameter(
            "a number with s, m, h or d, such as 15m or 30d", param_hint="--ttl"
        )
    ttl = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if not tokens.MIN_TTL <= ttl <= tokens.MAX_TTL:
        raise click.BadParameter("60 seconds to 365 days", param_hint="--ttl")
    return ttl


@token.command("issue")
@click.argument("org_id")
@click.argument("principal_id")
@click.option(
    "--role", required=True, type=click.Choice(tokens.ROLES), help="What the token may do."
)
@click.option("--ttl", default=None, help="Expire after N[smhd] (60s to 365d); default: never.")
@handle_errors
def token_issue(org_id: str, principal_id: str, role: str, ttl: str | None) -> None:
    """Issue a token; it is printed once, on the last line, and stored only as a hash."""
    lifetime = parse_ttl(ttl)
    services = load_services()
    try:
        with services.unit_of_work() as uow:
            row, plaintext = tokens.issue(uow, org_id, principal_id, role, audit.CLI, ttl=lifetime)
            token_id, expires_at = row.id, row.expires_at
    finally:
        services.close()
    expiry = f"expires {rfc3339_micros(expires_at)}" if expires_at else "does not expire"
    click.echo(
        f"token {token_id} for {principal_id} ({role}) in {org_id}, {expiry}; shown once:",
        err=True,
    )
    click.echo(plaintext)


_COLUMNS = ("TOKEN_ID", "PRINCIPAL", "ROLE", "KIND", "CREATED", "EXPIRES", "LAST_USED", "REVOKED")


def _when(moment: datetime | None, empty: str) -> str:
    return rfc3339_micros(moment) if moment is not None else empty


@token.command("list")
@click.argument("org_id")
@handle_errors
def token_list(org_id: str) -> None:
    """Every token of ORG, newest first, revoked and expired ones marked; never a token."""
    services = load_services()
    try:
        with services.unit_of_work() as uow:
            rows = tokens.list_tokens(uow.session, org_id)
    finally:
        services.close()
    now = datetime.now(UTC)
    table = [_COLUMNS]
    for info in rows:
        revoked = _when(info.revoked_at, "-")
        if info.revoked_at is not None:
            revoked = f"REVOKED {revoked}"
        expires = _when(info.expires_at, "never")
        if info.expires_at is not None and info.expires_at <= now:
            expires = f"EXPIRED {expires}"
        table.append(
            (
                info.token_id,
                info.principal_id,
                info.role,
                info.kind,
                _when(info.created_at, "-"),
                expires,
                _when(info.last_used_at, "-"),
                revoked,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


@token.command("revoke")
@click.argument("token_id")
@handle_errors
def token_revoke(token_id: str) -> None:
    """Revoke TOKEN_ID: it answers 401 from the next request on, in every process."""
    services = load_services()
    try:
        with services.unit_of_work() as uow:
            row = tokens.revoke(uow, token_id, audit.CLI)
            principal, role, org_id = row.principal_id, row.role, row.org_id
    finally:
        services.close()
    click.echo(f"token {token_id} for {principal} ({role}) in {org_id} revoked")


@click.command("ui-link")
@click.argument("org_id")
@click.argument("principal_id")
@click.option(
    "--role",
    required=True,
    type=click.Choice(ui_sessions.LINK_ROLES),
    help="The page it opens: user (security), auditor (audit), admin (admin).",
)
@handle_errors
def ui_link(org_id: str, principal_id: str, role: str) -> None:
    """A one-time link to the pages, signed in as PRINCIPAL_ID, valid 120 s; only the
    URL is printed (its ticket is stored only as a hash)."""
    services = load_services()
    try:
        with services.unit_of_work() as uow:
            ticket, _ = ui_sessions.issue_ticket(
                uow, org_id, principal_id, role, utcnow(), audit.CLI
            )
    finally:
        services.close()
    click.echo(ui_sessions.link(services.settings.public_url, ticket))


@click.group()
def keys() -> None:
    """Encryption keys of secrets at rest."""


@keys.command("rotate")
@handle_errors
def keys_rotate() -> None:
    """Re-encrypt every stored secret under the first key of MFA_SECRET_KEY.

    Put the new key first (MFA_SECRET_KEY=new,old), restart the service, run
    this, then remove the old key.
    """
    services = load_services()
    try:
        count = rotate_all(
            services.unit_of_work,
            services.box,
            audit.CLI,
            keys_configured=len(services.settings.secret_keys),
        )
    finally:
        services.close()
    click.echo(f"{count} secrets re-encrypted under the newest key")
