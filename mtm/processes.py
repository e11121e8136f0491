"""Run a few long-lived child processes together: forward a stop signal, wait, and exit when any of them dies.

`manage.py runportal` uses it to keep the web server and its Celery workers side by side; the tests use
`die_with_parent` so a worker they start never outlives them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` that asks Linux to send `sig` to the child when its parent dies (a no-op elsewhere)."""

    def _set() -> None:
        if not sys.platform.startswith("linux"):
            return
        with contextlib.suppress(OSError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))

    return _set


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid`; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class Child:
    """One supervised command. `stop_signal` asks it to finish cleanly (SIGTERM is Celery's warm shutdown);
    with `log_path` its output is appended to that file instead of the terminal."""

    name: str
    argv: list[str]
    stop_signal: int = signal.SIGTERM
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, env: dict[str, str] | None = None) -> None:
        output = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = open(self.log_path, "ab")  # noqa: SIM115 (the child holds it; our copy is closed below)
        # A session of its own: the terminal's Ctrl-C reaches only the supervisor, which forwards exactly one
        # signal (Celery treats a second SIGINT as "terminate running tasks now").
        try:
            self.process = subprocess.Popen(
                self.argv,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        finally:
            if output is not None:
                output.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Start children, forward SIGINT/SIGTERM/SIGHUP, and stop all when one exits or a signal arrives."""

    def __init__(
        self, children: list[Child], grace_seconds: float = 20.0, out=None, started_lines: list[str] | None = None
    ) -> None:
        self.children = children
        self.started_lines = started_lines or []  # said once every child has started
        self.grace_seconds = grace_seconds
        self.out = out or sys.stdout
        self.signals_received = 0

    def _on_signal(self, signum: int, _frame) -> None:
        self.signals_received += 1

    def run(self, env: dict[str, str] | None = None) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for child in self.children:
            child.start(env)
            self._say(f"started {child.name} (pid {child.pid}): {' '.join(child.argv)}")
        for line in self.started_lines:
            self._say(line)
        while not self.signals_received and all(c.running() for c in self.children):
            time.sleep(0.2)
        dead = [c for c in self.children if not c.running()]
        for child in dead:
            where = f" (its output: {child.log_path})" if child.log_path else ""
            self._say(f"{child.name} exited with status {child.process.returncode}; stopping the others{where}")
        if self.signals_received:
            self._say("stopping; the worker finishes its current task first (press Ctrl-C again to stop at once)")
        self._stop_all()
        if dead and not self.signals_received:
            # A child that ends by itself is a failure, whatever its status (a signal shows as negative).
            return max(dead[0].process.returncode, 1)
        return 0

    def _stop_all(self) -> None:
        for child in self.children:
            if child.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, child.stop_signal)
        seen = self.signals_received
        deadline = time.monotonic() + self.grace_seconds
        while any(c.running() for c in self.children):
            if time.monotonic() > deadline or self.signals_received > seen:
                self._say("killing what is left")
                break
            time.sleep(0.2)
        for child in self.children:
            # Anything left in the child's group (a busy pool process, a trainer) goes with it.
            signal_group(child.pid, signal.SIGKILL)
            child.process.wait()
            self._say(f"{child.name} stopped")

    def _say(self, text: str) -> None:
        print(f"[runportal] {text}", file=self.out, flush=True)
