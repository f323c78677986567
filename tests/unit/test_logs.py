from __future__ import annotations

import json
import logging

import pytest

from infra import logs


@pytest.fixture
def captured() -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "api", "levelname": "INFO", "levelno": 20, "msg": "served %s", "args": ("/x",)}
    )


def test_json_line_carries_request_and_task_ids(captured: logging.LogRecord) -> None:
    rid = logs.request_id_var.set("req-1")
    tid = logs.task_id_var.set("task-9")
    try:
        line = json.loads(logs.JsonFormatter().format(captured))
    finally:
        logs.request_id_var.reset(rid)
        logs.task_id_var.reset(tid)
    assert line["msg"] == "served /x"
    assert line["request_id"] == "req-1" and line["task_id"] == "task-9"
    assert line["level"] == "info" and line["ts"].endswith("Z")


def test_tokens_are_redacted_even_in_messages_of_libraries() -> None:
    token = "mfa_" + "A" * 43
    record = logging.makeLogRecord({"msg": f"Authorization: Bearer {token}", "levelname": "INFO"})
    out = logs.JsonFormatter().format(record)
    assert token not in out and "[redacted-token]" in out
    assert token not in logs.TextFormatter().format(record)


def test_extra_fields_are_kept(captured: logging.LogRecord) -> None:
    captured.status = 202
    captured.route = "/v1/me/backup-codes/regenerations"
    line = json.loads(logs.JsonFormatter().format(captured))
    assert line["status"] == 202 and line["route"].startswith("/v1/")


def test_configure_twice_keeps_one_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        logs.configure("INFO", True)
        logs.configure("INFO", True)
        ours = [h for h in root.handlers if getattr(h, "_mfa", False)]
        assert len(ours) == 1
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
