"""`mfa-codes`: the command line. Each family of commands lives in its own module."""

from __future__ import annotations

import os

import click

from cli.admin import db, keys, org, token, ui_link
from cli.audit import audit
from cli.processes import beat, run, serve, worker
from cli.users import user

PRIVATE_UMASK = 0o077


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Multi-factor backup codes: run the service and administer it.

    Settings come from the environment (MFA_DATABASE_URL, MFA_BROKER_URL,
    MFA_SECRET_KEY, ...) and an optional .env; with none set, everything runs
    embedded under ./var/.
    """
    # Everything a command writes (var/, the SQLite files, the broker's messages, what
    # `run`'s children write) is private to its owner. Given back when the command ends,
    # for callers that run it in-process.
    previous = os.umask(PRIVATE_UMASK)
    click.get_current_context().call_on_close(lambda: os.umask(previous))


for command in (run, serve, worker, beat, db, org, user, token, ui_link, keys, audit):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="mfa-codes")
