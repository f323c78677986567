"""A restart that cannot start its child (no such program, no memory, no process slot)
is logged and tried again later: it never takes the other children down."""

from __future__ import annotations

import logging

import pytest

from cli.supervise import ChildSpec, Supervisor


def test_a_child_that_cannot_be_started_again_is_rescheduled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor([ChildSpec("worker", ["/nonexistent/mfa-codes-worker"])])
    [child] = supervisor.children
    child.restart_at = 100.0
    with caplog.at_level(logging.ERROR):
        supervisor._restart_due(100.0)  # must not raise
    assert child.proc is None and child.restart_at is not None and child.restart_at > 100.0
    assert any("could not be started" in r.getMessage() for r in caplog.records)
