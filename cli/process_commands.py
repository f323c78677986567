"""run, serve, worker, beat: the service's processes. (Filled in by the pipeline work.)"""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def run(host: str, port: int) -> None:
    """The embedded default: API, worker and scheduler together."""
    raise click.ClickException("not implemented yet")


@click.command()
def serve() -> None:
    """The HTTP API under gunicorn."""
    raise click.ClickException("not implemented yet")


@click.command()
def worker() -> None:
    """A Celery worker."""
    raise click.ClickException("not implemented yet")


@click.command()
def beat() -> None:
    """The scheduler (exactly one per deployment)."""
    raise click.ClickException("not implemented yet")
