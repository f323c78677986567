"""`run`'s supervisor: starts its children, restarts one that dies, stops them all.

Generic over the children (a name and a command line each). Each child gets its
own process group, so a terminal's Ctrl-C reaches the supervisor alone, which
stops each child with one SIGTERM, and a dead child's orphans (gunicorn's
workers) can be killed with it. A child that exits unexpectedly is restarted
after a pause that doubles from RESTART_FIRST to RESTART_MAX, and starts again
from RESTART_FIRST once a child has run for RESTART_RESET_AFTER.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# How long children get to finish after SIGTERM (a task at hand, a request).
# Longer than gunicorn's graceful_timeout (30 s), so requests in flight can finish.
STOP_GRACE_SECONDS = 35.0
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
# A child that ran this long before dying was healthy: its next restart is quick again.
RESTART_RESET_AFTER = 60.0
# SIGHUP: the terminal closed; stop as for Ctrl-C rather than die without stopping.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
WATCHED = STOP_SIGNALS | {signal.SIGCHLD}
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None  # set while it waits to be restarted
    delay: float = RESTART_FIRST  # the pause before its next restart
    restarts: int = 0


def restart_delay(previous: float, ran_for: float) -> tuple[float, float]:
    """(this pause, the next one): doubling up to RESTART_MAX, reset by a long run."""
    current = RESTART_FIRST if ran_for >= RESTART_RESET_AFTER else previous
    return current, min(current * 2, RESTART_MAX)


def _libc() -> Any:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _preexec_for(libc: Any) -> Callable[[], None]:
    def setup() -> None:
        # Children start with the parent's blocked signals: give them theirs back.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        # Its own process group: a terminal's Ctrl-C reaches the supervisor alone.
        # (Gunicorn's workers, hit by SIGINT from the terminal and SIGQUIT from their
        # master at once, could deadlock.)
        os.setpgrp()
        if libc is not None:
            # If the supervisor itself is killed outright, its children get SIGTERM.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The whole group: a grandchild (a gunicorn worker) must not outlive its parent.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _exit_fields(code: int) -> dict[str, object]:
    fields: dict[str, object] = {"exit_code": code}
    if code < 0:
        with contextlib.suppress(ValueError):
            fields["signal"] = signal.Signals(-code).name
    return fields


class Supervisor:
    def __init__(self, specs: Sequence[ChildSpec]) -> None:
        self.children = [Child(spec) for spec in specs]
        self._preexec = _preexec_for(_libc())

    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.spec.argv, preexec_fn=self._preexec)
        child.started = time.monotonic()
        child.restart_at = None

    def _on_exit(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        _kill_group(child.proc)  # its orphans would hold the port or the queue
        pause, child.delay = restart_delay(child.delay, now - child.started)
        child.restart_at = now + pause
        log.error(
            "%s stopped unexpectedly (exit code %s): restarting in %.0f s",
            child.spec.name,
            code,
            pause,
            extra={"child": child.spec.name, **_exit_fields(code), "restart_in": pause},
        )

    def _restart_due(self, now: float) -> None:
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                try:
                    self._start(child)
                except OSError as error:  # no such program, no memory, no process slot
                    pause, child.delay = restart_delay(child.delay, 0.0)
                    child.restart_at = now + pause
                    log.error(
                        "%s could not be started (%s): trying again in %.0f s",
                        child.spec.name,
                        type(error).__name__,
                        pause,
                        extra={"child": child.spec.name, "restart_in": pause},
                    )
                    continue
                child.restarts += 1
                log.info(
                    "%s restarted",
                    child.spec.name,
                    extra={"child": child.spec.name, "restarts": child.restarts},
                )

    def _exited(self) -> list[Child]:
        return [
            c
            for c in self.children
            if c.restart_at is None and c.proc is not None and c.proc.poll() is not None
        ]

    def run(self, tick: Callable[[], float]) -> int:
        """Until a stop signal; `tick` runs every round and says how long to wait
        at most before the next one. The exit code of the whole."""
        # Blocked before the children start, so no signal slips between spawning and
        # waiting; sigtimedwait then takes them synchronously.
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            for child in self.children:
                self._start(child)
            while True:
                now = time.monotonic()
                for child in self._exited():
                    if signal.sigpending() & STOP_SIGNALS:
                        break  # a stop on its way reached the child first: no restart
                    self._on_exit(child, now)
                self._restart_due(now)
                wait = tick()
                pending = [c.restart_at for c in self.children if c.restart_at is not None]
                if pending:
                    wait = max(0.0, min([wait, *(at - now for at in pending)]))
                info = signal.sigtimedwait(WATCHED, wait)
                if info is not None and info.si_signo != signal.SIGCHLD:
                    log.info("stopping on %s", signal.Signals(info.si_signo).name)
                    return 0
        finally:
            self.stop()
            # Take what is still pending (a Ctrl-C seen above, SIGCHLDs) before
            # unblocking, or it would be delivered as a KeyboardInterrupt on the way out.
            while signal.sigtimedwait(WATCHED, 0) is not None:
                pass
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)

    def stop(self) -> None:
        """SIGTERM to whoever is alive, SIGKILL after the grace period or a second signal."""
        procs = {c.spec.name: c.proc for c in self.children if c.proc is not None}
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(p.poll() is None for p in procs.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            info = signal.sigtimedwait(WATCHED, min(left, 1.0))
            if info is not None and info.si_signo != signal.SIGCHLD:
                log.warning("second stop signal: killing what is left")
                break
        for name, proc in procs.items():
            if proc.poll() is None:
                log.warning("%s did not stop in time: killed", name)
            _kill_group(proc)
            proc.wait()
