"""What every command shares: settings, services, and turning errors into exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from domain.errors import ConfigurationError, DomainError
from infra.services import Services
from infra.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1  # the command ran and was refused (unknown org, duplicate user, bad chain)
EXIT_CONFIG = 2  # settings or usage are wrong


def load_services() -> Services:
    return Services.build(Settings.from_env())


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigurationError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_CONFIG)
        except DomainError as exc:
            click.echo(f"error: {exc.detail}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]
