"""The line protocol between the trainer child process and its supervisor.

The child prints one event per line on stdout: `MTM_EVENT {json}`. Every other line (library logs, warnings,
a stray print) is ordinary log output that the supervisor keeps in its tail. Light to import: no torch.

Event kinds and their fields (every event also has "event", "time" (unix seconds) and "elapsed" (seconds
since the child started)):
- started:    device, precision, total_steps, global_step (> 0 when resumed), resumed_from, examples, rows,
              timings {imports, model_load, dataset, trainer_setup} in seconds
- progress:   step, total_steps, epoch, loss, learning_rate, tokens_per_second, eta_seconds, logged
              (loss and learning_rate are the last logged values, fresh when logged is true, i.e. on a
              logging step: those events are the points of the loss curve; tokens are real, non-padding
              tokens; eta_seconds is null until two steps have run)
- checkpoint: path, step
- finished:   metrics {...}, output_dir, model_dir, adapter_dir, manifest
- cancelled:  step, checkpoint
- error:      code, message, hint, traceback
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from projects.trainer.spec import build_spec

EVENT_PREFIX = "MTM_EVENT "
EVENT_KINDS = ("started", "progress", "checkpoint", "finished", "cancelled", "error")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3

__all__ = [
    "EVENT_KINDS",
    "EVENT_PREFIX",
    "EXIT_CANCELLED",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_spec",
    "format_event",
    "parse_event",
    "trainer_command",
    "write_spec",
]


def format_event(kind: str, started: float, **fields: Any) -> str:
    """One protocol line (without the newline). `started` is the child's time.monotonic() at start."""
    payload = {"event": kind, "time": round(time.time(), 3), "elapsed": round(time.monotonic() - started, 3)}
    payload.update(fields)
    return EVENT_PREFIX + json.dumps(_finite(payload), separators=(",", ":"), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    """NaN and infinity become null: the protocol is strict JSON (a diverged loss must not break the line)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def parse_event(line: str | bytes) -> dict[str, Any] | None:
    """The event on a line the child printed, or None for an ordinary log line (or a damaged event)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    start = line.find(EVENT_PREFIX)  # usually 0; later when stderr shares the pipe and left a partial line
    if start < 0:
        return None
    try:
        event = json.loads(line[start + len(EVENT_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENT_KINDS:
        return None
    return event


def write_spec(spec: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2))
    return path


def trainer_command(spec_path: str | Path, python: str | None = None) -> list[str]:
    """The argv that starts the child; run it with the repository root as the working directory
    (or on PYTHONPATH) so that `projects` imports."""
    return [python or sys.executable, "-m", "projects.trainer", str(spec_path)]
