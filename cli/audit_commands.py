"""audit verify, audit export, audit public-key. (Filled in by the audit work.)"""

from __future__ import annotations

import click


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""
