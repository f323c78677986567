"""Structured logs: one JSON object a line, request id and task id on every line.

The ids travel in context variables that the API middleware and the Celery
task hooks set. A filter drops anything that looks like a bearer token or a
repudiation ticket's path, whatever a library decides to log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)

_TOKEN = re.compile(r"(Bearer\s+)?mfa_[A-Za-z0-9_\-]{20,}")
# The path of a repudiation link holds its ticket: a credential, never logged.
_TICKET_PATH = re.compile(r"(/v1/repudiations/)[^/\s?\"']+")
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact(text: str) -> str:
    return _TICKET_PATH.sub(r"\1[redacted]", _TOKEN.sub("[redacted-token]", text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "request_id": request_id_var.get(),
            "task_id": task_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={value}"
            for name, value in (("rid", request_id_var.get()), ("task", task_id_var.get()))
            if value
        )
        return redact(f"{super().format(record)} {ids}".rstrip())


def configure(level: str = "INFO", as_json: bool = True) -> None:
    """Idempotent: replaces the root handler, so calling it twice does not double lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_mfa", False):
            root.removeHandler(existing)
    handler._mfa = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
