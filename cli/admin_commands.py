"""db, org, user, token: setting up organizations and who may call the API."""

from __future__ import annotations

import click
from sqlalchemy import select

from cli.common import handle_errors, load_services
from domain import accounts, audit, tokens
from domain import audit_types as types
from domain.key_rotation import rotate_all
from domain.migrate import upgrade_settings
from domain.models import Organization
from domain.settings import Settings


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
    with services.unit_of_work() as session:
        accounts.create_org(session, org_id, audit.CLI)
    click.echo(f"organization {org_id} created (backup codes on, 5 codes)")


@click.group()
def user() -> None:
    """Users of an organization."""


@user.command("create")
@click.argument("org_id")
@click.argument("user_id")
@click.option("--email", default=None, help="The user's email, shown on the sheet.")
@handle_errors
def user_create(org_id: str, user_id: str, email: str | None) -> None:
    """Create USER_ID in ORG."""
    services = load_services()
    with services.unit_of_work() as session:
        accounts.create_user(session, org_id, user_id, email, audit.CLI)
    click.echo(f"user {user_id} created in {org_id}")


@click.group()
def token() -> None:
    """API tokens."""


@token.command("issue")
@click.argument("org_id")
@click.argument("principal_id")
@click.option(
    "--role", required=True, type=click.Choice(tokens.ROLES), help="What the token may do."
)
@handle_errors
def token_issue(org_id: str, principal_id: str, role: str) -> None:
    """Issue a token; it is printed once, on the last line, and stored only as a hash."""
    services = load_services()
    with services.unit_of_work() as session:
        row, plaintext = tokens.issue(session, org_id, principal_id, role, audit.CLI)
        token_id = row.id
    click.echo(f"token {token_id} for {principal_id} ({role}) in {org_id}; shown once:", err=True)
    click.echo(plaintext)


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
        count = rotate_all(services.sessions, services.box)
        # On every organization's chain: its secrets now depend on the newest key only.
        with services.unit_of_work() as session:
            for org_id in session.scalars(select(Organization.id).order_by(Organization.id)):
                audit.append(
                    session,
                    org_id,
                    types.SECRETS_REKEYED,
                    types.SUCCESS,
                    audit.CLI,
                    details={"keys_configured": len(services.settings.secret_keys)},
                )
    finally:
        services.close()
    click.echo(f"{count} secrets re-encrypted under the newest key")
