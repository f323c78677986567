"""`run`'s supervisor with real child processes: one that keeps dying is restarted
after doubling pauses and logged, its sibling is left alone, a stop signal ends all."""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import threading
from pathlib import Path

import pytest

from cli.supervise import (
    RESTART_FIRST,
    RESTART_MAX,
    RESTART_RESET_AFTER,
    ChildSpec,
    Supervisor,
    restart_delay,
)


def test_the_pause_doubles_up_to_its_cap_and_a_long_run_resets_it() -> None:
    pauses, upcoming = [], RESTART_FIRST
    for _ in range(7):
        pause, upcoming = restart_delay(upcoming, ran_for=0.5)
        pauses.append(pause)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert upcoming == RESTART_MAX
    assert restart_delay(RESTART_MAX, ran_for=RESTART_RESET_AFTER) == (1.0, 2.0)


def test_a_dying_child_is_restarted_with_back_off_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = tmp_path / "starts"
    flaky = ChildSpec(
        "flaky",
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            f"open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n')\n"
            "sys.exit(3)",
        ],
    )
    steady = ChildSpec("steady", [sys.executable, "-c", "import time; time.sleep(120)"])
    supervisor = Supervisor([flaky, steady])
    main = threading.main_thread().ident
    assert main is not None

    steady_pids: set[int] = set()

    def tick() -> float:
        proc = supervisor.children[1].proc
        assert proc is not None
        steady_pids.add(proc.pid)
        if starts.exists() and len(starts.read_text().splitlines()) >= 3:
            # To this thread, where it is blocked: it waits for sigtimedwait.
            signal.pthread_kill(main, signal.SIGTERM)
        return 0.1

    with caplog.at_level(logging.INFO, logger="cli.supervise"):
        code = supervisor.run(tick)

    assert code == 0
    stamps = [float(line) for line in starts.read_text().splitlines()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert len(stamps) == 3
    assert 1.0 <= gaps[0] < 1.9 and 2.0 <= gaps[1] < 3.5, gaps
    # The third death may be seen (and logged) before the stop signal is.
    died = [r for r in caplog.records if r.levelno == logging.ERROR][:2]
    assert [(r.__dict__["child"], r.__dict__["exit_code"]) for r in died] == [("flaky", 3)] * 2
    assert [r.__dict__["restart_in"] for r in died] == [1.0, 2.0]
    assert supervisor.children[0].restarts == 2 and supervisor.children[1].restarts == 0
    assert len(steady_pids) == 1  # the healthy sibling was never touched
    assert all(c.proc is not None and c.proc.poll() is not None for c in supervisor.children)
