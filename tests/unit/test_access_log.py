"""The access logs write a repudiation link's path without its ticket."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from api.access_log import RedactingLogger
from infra.logs import redact

TICKET = "Zq3v9K-8xYwR2_tLm0pQ7sNcB4hJ6gFd1eA5uV0oXiE"
ROOT = Path(__file__).resolve().parents[2]


def test_redact_takes_the_ticket_out_of_any_text() -> None:
    line = f'GET /v1/repudiations/{TICKET} HTTP/1.1 and "/v1/repudiations/{TICKET}"'
    assert TICKET not in redact(line)
    assert redact(line).count("/v1/repudiations/[redacted]") == 2
    assert redact("/v1/me/mfa") == "/v1/me/mfa"


def test_gunicorns_access_line_holds_no_ticket(caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", '%(h)s "%(m)s %(U)s" %(s)s %(r)s %({raw_uri}e)s')
    logger = RedactingLogger(cfg)
    path = f"/v1/repudiations/{TICKET}"
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": path,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    resp = SimpleNamespace(status="204 No Content", headers=[], sent=0)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.access_log.addHandler(handler)
    logger.access(resp, [], environ, timedelta(milliseconds=3))
    (line,) = records
    assert TICKET not in line
    assert "/v1/repudiations/[redacted]" in line and "204" in line


def test_the_deployments_use_the_redacting_loggers() -> None:
    gunicorn_conf = (ROOT / "deploy" / "gunicorn.conf.py").read_text()
    assert 'logger_class = "api.access_log.RedactingLogger"' in gunicorn_conf
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    log_format = re.search(r"log_format mfa ([^;]+);", nginx)
    assert log_format and "$uri_redacted" in log_format.group(1)
    assert "~^/v1/repudiations/  /v1/repudiations/[redacted];" in nginx
