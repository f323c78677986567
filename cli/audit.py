"""audit verify, export, checkpoint, public-key: the security team's side of the trail."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, closing
from datetime import UTC, datetime
from typing import IO, Any

import click
from sqlalchemy import select, union
from sqlalchemy.orm import Session

from cli.common import EXIT_ERROR, handle_errors, load_services
from domain import audit as audit_log
from domain.audit import review
from domain.audit.checkpoints import (
    checkpoint_org,
    public_key_pem,
    public_key_raw,
    write_checkpoints,
)
from domain.audit.export import csv_chunks, ndjson_chunks, stream_events
from domain.audit.query import Filters, parse_filters
from domain.errors import InvalidRequest, NotFound
from domain.models import AuditEvent, AuditHead, Organization
from infra.settings import Settings


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""


def _known_orgs(session: Session) -> list[str]:
    """Every organization with a chain: organizations, heads, and events without either."""
    query = union(
        select(Organization.id), select(AuditHead.org_id), select(AuditEvent.org_id).distinct()
    )
    return sorted(session.execute(query).scalars())


def _require_org(session: Session, org_id: str) -> None:
    if session.get(Organization, org_id) is None and session.get(AuditHead, org_id) is None:
        raise NotFound(f"no organization {org_id!r}")


def _expected(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, hash_ = value.partition(":")
    if not seq.isdigit() or int(seq) < 1 or len(hash_) != 64:
        raise click.BadParameter("SEQ:HASH, a seq from 1 and a 64-hex hash", param_hint="--expect")
    return int(seq), hash_.lower()


@audit.command("verify")
@click.option("--org", "org_id", default=None, help="Only this organization (default: all).")
@click.option(
    "--expect",
    default=None,
    metavar="SEQ:HASH",
    help="A head kept elsewhere (a checkpoint's log line, an earlier verify): the chain "
    "must hold that hash at that seq. Needs --org.",
)
@handle_errors
def verify(org_id: str | None, expect: str | None) -> None:
    """Recompute every chain; exit 1 naming the first bad event of each broken one."""
    expected = _expected(expect)
    if expected is not None and org_id is None:
        raise click.UsageError("--expect needs --org")
    with closing(load_services()) as services:
        with services.unit_of_work() as uow:
            if org_id is not None:
                _require_org(uow.session, org_id)
            orgs = [org_id] if org_id is not None else _known_orgs(uow.session)
        broken = 0
        for org in orgs:
            with services.unit_of_work() as uow:
                result = review.verify_recorded(
                    uow, org, services.settings, audit_log.CLI, expect=expected
                )
            if result.ok:
                head = result.head["seq"] if result.head else 0
                click.echo(
                    f"{org}: ok ({result.events_checked} events, head at seq {head}, "
                    f"{result.unsigned_events} not yet signed)"
                )
            else:
                broken += 1
                click.echo(f"{org}: BROKEN at seq {result.first_bad_seq}: {result.reason}")
        if broken:
            click.echo(f"{broken} of {len(orgs)} chains do not verify", err=True)
            sys.exit(EXIT_ERROR)


def _filters(
    since: str | None,
    until: str | None,
    type_: tuple[str, ...],
    user_id: str | None,
    request_id: str | None,
) -> Filters:
    params: dict[str, str | list[str]] = {}
    for name, value in (
        ("since", since),
        ("until", until),
        ("user_id", user_id),
        ("request_id", request_id),
    ):
        if value is not None:
            params[name] = value
    if type_:
        params["type"] = list(type_)
    try:
        return parse_filters(params)
    except InvalidRequest as exc:
        raise click.UsageError(f"--{(exc.field or '').replace('_', '-')}: {exc.detail}") from None


def _with_progress(rows: Iterator[Any], total: int, stack: ExitStack) -> Iterator[Any]:
    """A progress bar on stderr, only for a person watching a terminal."""
    if not sys.stderr.isatty():
        return rows
    bar = stack.enter_context(click.progressbar(length=total, file=sys.stderr, label="exporting"))

    def counted() -> Iterator[Any]:
        for row in rows:
            yield row
            bar.update(1)

    return counted()


@audit.command("export")
@click.option("--org", "org_id", required=True, help="The organization to export.")
@click.option(
    "--format", "fmt", type=click.Choice(["ndjson", "csv"]), default="ndjson", show_default=True
)
@click.option("--since", default=None, help="From this RFC 3339 moment on (inclusive).")
@click.option("--until", default=None, help="Up to this RFC 3339 moment (inclusive).")
@click.option("--type", "type_", multiple=True, help="An event type or a prefix ending in '*'.")
@click.option("--user-id", default=None, help="Only events about this user.")
@click.option("--request-id", default=None, help="Only events of this request.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None)
@handle_errors
def export(
    org_id: str,
    fmt: str,
    since: str | None,
    until: str | None,
    type_: tuple[str, ...],
    user_id: str | None,
    request_id: str | None,
    output: str | None,
) -> None:
    """Write the organization's events, oldest first, to standard output (or --output)."""
    filters = _filters(since, until, type_, user_id, request_id)
    with closing(load_services()) as services:
        with services.unit_of_work() as uow:
            _require_org(uow.session, org_id)
            filters, total = review.start_export(uow, org_id, filters, fmt, "cli", audit_log.CLI)
        with ExitStack() as stack:
            out: IO[bytes] = (
                stack.enter_context(open(output, "wb")) if output else sys.stdout.buffer
            )
            rows = _with_progress(
                stream_events(services.unit_of_work, org_id, filters), total, stack
            )
            chunks = ndjson_chunks(rows) if fmt == "ndjson" else csv_chunks(rows)
            for chunk in chunks:
                out.write(chunk)
            out.flush()
        if output:
            click.echo(f"{total} events written to {output}", err=True)


@audit.command("checkpoint")
@click.option("--org", "org_id", default=None, help="Only this organization (default: all).")
@handle_errors
def checkpoint(org_id: str | None) -> None:
    """Sign the head of every chain that moved since its last checkpoint."""
    with closing(load_services()) as services:
        now = datetime.now(UTC)
        with services.unit_of_work() as uow:
            if org_id is None:
                written = write_checkpoints(uow, services.settings, now)
                click.echo(f"{written} checkpoints written")
                return
            _require_org(uow.session, org_id)
            cp = checkpoint_org(uow, services.settings, org_id, now)
            if cp is None:
                click.echo(f"{org_id}: nothing to sign (empty chain)")
            else:
                click.echo(f"{org_id}: checkpoint at seq {cp.seq} (key {cp.key_id})")


@audit.command("public-key")
@click.option(
    "--raw",
    is_flag=True,
    help="Base64 of the 32 raw bytes, as MFA_AUDIT_RETIRED_PUBLIC_KEYS takes it after a rotation.",
)
@handle_errors
def public_key(raw: bool) -> None:
    """Print the checkpoints' Ed25519 verification key (PEM)."""
    settings = Settings.from_env()
    if raw:
        click.echo(public_key_raw(settings))
    else:
        click.echo(public_key_pem(settings), nl=False)
