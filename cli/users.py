"""user: the users of an organization, as GET /v1/users and GET /v1/users/{id} show
them (the same representation; never a secret)."""

from __future__ import annotations

from typing import Any

import click

from api import representations
from cli.common import handle_errors, load_services
from domain import accounts, admin, audit, users


@click.group()
def user() -> None:
    """Users of an organization."""


@user.command("create")
@click.argument("org_id")
@click.argument("user_id")
@click.option("--email", default=None, help="The user's email, shown on the sheet.")
@handle_errors
def user_create(org_id: str, user_id: str, email: str | None) -> None:
    """Create USER_ID in ORG (applications provision theirs with PUT /v1/users/{id})."""
    services = load_services()
    try:
        with services.unit_of_work() as uow:
            accounts.create_user(uow, org_id, user_id, email, audit.CLI)
    finally:
        services.close()
    click.echo(f"user {user_id} created in {org_id}")


_COLUMNS = ("USER_ID", "DISPLAY_NAME", "EMAIL", "CREATED", "ENROLLED", "CODES", "LOCKED")
_MAX_PAGES = 10_000  # 10 million users: bounded, and far beyond any organization


def _row(shown: dict[str, Any]) -> tuple[str, ...]:
    mfa = shown["mfa"]
    codes = mfa["backup_codes"]
    locked = [f for f in ("totp_locked", "backup_codes_locked") if mfa["limits"][f]]
    return (
        shown["user_id"],
        shown["display_name"] or "-",
        shown["email"] or "-",
        shown["created_at"],
        "yes" if mfa["enrolled"] else "no",
        f"{codes['remaining']}/{codes['total']}" if codes else "-",
        ",".join(name.removesuffix("_locked") for name in locked) or "-",
    )


@user.command("list")
@click.argument("org_id")
@handle_errors
def user_list(org_id: str) -> None:
    """Every user of ORG, oldest first, with their enrollment and codes left."""
    services = load_services()
    table: list[tuple[str, ...]] = [_COLUMNS]
    try:
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            with services.unit_of_work() as uow:
                page = users.list_page(uow.session, org_id, users.MAX_PAGE, cursor)
                for row in page.users:
                    status = admin.mfa_status(uow.session, services, row)
                    table.append(_row(representations.user(row, status)))
            cursor = page.next_cursor
            if cursor is None:
                break
    finally:
        services.close()
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """mfa.limits.totp_locked: false, ... (null as '-')."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _flatten(v, f"{prefix}{k}.")]
    shown = "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return [(prefix.rstrip("."), shown)]


@user.command("show")
@click.argument("org_id")
@click.argument("user_id")
@handle_errors
def user_show(org_id: str, user_id: str) -> None:
    """USER_ID of ORG: the profile and the multi-factor status, one `key: value` a line."""
    services = load_services()
    try:
        with services.unit_of_work() as uow:
            accounts.get_org(uow.session, org_id)
            row = accounts.get_user(uow.session, org_id, user_id)
            shown = representations.user(row, admin.mfa_status(uow.session, services, row))
    finally:
        services.close()
    pairs = _flatten(shown)
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {value}")
