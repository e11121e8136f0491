"""Run the trainer child process and follow it: events, a log tail, cancellation and heartbeats.

The worker task stays alive whatever the child does (a crash, an OOM kill): the child's exit code and its last
"error" event are what the run records. No Django here; the pipeline passes callbacks.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mtm.processes import die_with_parent, signal_group
from projects.trainer.events import event_line, parse_event

TAIL_LINES = 200
TAIL_CHARS = 20_000
# A cancelled child that has not stopped by itself: SIGTERM after this long, SIGKILL after that.
CANCEL_TERM_SECONDS = 300
CANCEL_KILL_SECONDS = 600


@dataclass
class ChildOutcome:
    returncode: int
    last_error: dict | None = None
    errors: list[dict] = field(default_factory=list)  # every "error" event, in order (one per rank at most)
    finished: dict | None = None
    cancelled: dict | None = None
    tail: str = ""
    events: int = 0
    log_path: Path | None = None
    stopped_for: object | None = None  # what health() returned when the supervisor stopped the child
    killed_after_cancel: bool = False  # cancelled, did not stop by itself in time, and was killed


class LogTail:
    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=TAIL_LINES)

    def add(self, line: str) -> None:
        self._lines.append(line.rstrip("\n")[:2000])

    def text(self) -> str:
        return "\n".join(self._lines)[-TAIL_CHARS:]


@dataclass
class Supervision:
    on_event: Callable[[dict], None]
    should_cancel: Callable[[], bool]
    on_tick: Callable[[str], None] = lambda tail: None
    health: Callable[[], object | None] = lambda: None  # a problem that must stop the child, or None
    tick_seconds: float = 2.0


def _pump(stream, lines: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode("utf-8", errors="replace"))
    lines.put(None)


def _child_setup(cwd_fd: int | None) -> Callable[[], None]:
    die = die_with_parent(signal.SIGKILL)

    def _setup() -> None:
        if cwd_fd is not None:
            os.fchdir(cwd_fd)
        die()

    return _setup


def supervise(
    cmd: list[str],
    *,
    cwd: Path,
    env: dict,
    cancel_file: Path,
    log_path: Path,
    sup: Supervision,
    cwd_fd: int | None = None,
) -> ChildOutcome:
    """Start the child, stream its output until it exits. Touches `cancel_file` once cancellation is asked for;
    escalates to SIGTERM and then SIGKILL if the child does not stop in time. With `cwd_fd` (an open folder) the
    child starts in that very folder, wherever its path leads by then; `cwd` is ignored."""
    tail = LogTail()
    outcome = ChildOutcome(returncode=-1, log_path=log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        # Its own process group (so it can be stopped whole) that dies with the worker: a worker killed with
        # SIGKILL must not leave an orphan trainer holding the GPU and writing to the output directory.
        proc = subprocess.Popen(
            cmd,
            cwd=None if cwd_fd is not None else cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(cwd_fd),
        )
        # The child needs seconds to import torch and load the model before its first line: say so at once.
        launched = f"trainer launched (pid {proc.pid}): loading libraries, the model and the dataset"
        log.write(launched + "\n")
        tail.add(launched)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        cancel_asked_at: float | None = None
        stop_asked_at: float | None = None
        last_tick = 0.0
        done = False
        while not done:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:
                done = True
            elif line:
                event = parse_event(line)
                if event is None:
                    log.write(line)
                    tail.add(line)
                else:
                    outcome.events += 1
                    if readable := event_line(event):  # the log reads as the trainer's own progress lines
                        log.write(readable + "\n")
                        tail.add(readable)
                    kind = event["event"]
                    if kind == "error":
                        outcome.last_error = event
                        outcome.errors.append(event)
                        log.write(event.get("traceback") or "")
                    elif kind == "finished":
                        outcome.finished = event
                    elif kind == "cancelled":
                        outcome.cancelled = event
                    sup.on_event(event)
            now = time.monotonic()
            if now - last_tick >= sup.tick_seconds:
                last_tick = now
                log.flush()
                sup.on_tick(tail.text())
                if outcome.stopped_for is None and proc.poll() is None:
                    outcome.stopped_for = sup.health()
                    if outcome.stopped_for is not None:
                        stop_asked_at = now
                        _signal_all(proc.pid, signal.SIGTERM)
                if cancel_asked_at is None and sup.should_cancel():
                    cancel_asked_at = now
                    cancel_file.touch()
            if cancel_asked_at is not None and proc.poll() is None and _escalate(proc, now - cancel_asked_at):
                outcome.killed_after_cancel = True
            if stop_asked_at is not None and proc.poll() is None and now - stop_asked_at > 30:
                _signal_all(proc.pid, signal.SIGKILL)
        outcome.returncode = proc.wait()
    outcome.tail = tail.text()
    return outcome


def _escalate(proc: subprocess.Popen, waited: float) -> bool:
    """A cancelled child normally saves a checkpoint and exits by itself; one stuck in a long step is stopped.
    True when it was killed."""
    if waited > CANCEL_KILL_SECONDS:
        _signal_all(proc.pid, signal.SIGKILL)
        return True
    if waited > CANCEL_TERM_SECONDS:
        _signal_all(proc.pid, signal.SIGTERM)
    return False


def _signal_all(pid: int, sig: int) -> None:
    """The child's process group and every process below it: torchrun starts each rank of a multi-device run in a
    session of its own, which a signal to the group alone would miss."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        below = []
    signal_group(pid, sig)
    for child in below:
        with contextlib.suppress(psutil.Error):
            child.send_signal(sig)
