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
- evaluation: step, eval_loss, perplexity, best_step, best_eval_loss (the eval set's loss, every eval_steps)
- checkpoint: path, step
- finished:   metrics {... eval_loss, best_eval_step, best_eval_loss, result_step}, output_dir, model_dir, adapter_dir, manifest
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

from projects.trainer.errors import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, EXIT_USAGE
from projects.trainer.ranks import launch_command

EVENT_PREFIX = "MTM_EVENT "
EVENT_KINDS = ("started", "progress", "evaluation", "checkpoint", "finished", "cancelled", "error")

__all__ = [
    "EVENT_KINDS",
    "EVENT_PREFIX",
    "EXIT_CANCELLED",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "event_line",
    "format_event",
    "parse_event",
    "trainer_command",
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


def _number(value: Any, spec: str) -> str | None:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _eta(seconds: Any) -> str | None:
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return None
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def event_line(event: dict[str, Any]) -> str | None:
    """The log line a person reads for an event ("step 10/100 loss 2.3100 lr 2.00e-04 ..."), or None."""
    kind = event.get("event")
    if kind == "progress":
        step = f"step {event.get('step')}" + (f"/{event['total_steps']}" if event.get("total_steps") else "")
        fresh = bool(event.get("logged"))  # between logging steps an event repeats the last loss and lr: not shown
        parts = [
            step,
            (f"loss {loss}" if fresh and (loss := _number(event.get("loss"), ".4f")) else None),
            (f"lr {lr}" if fresh and (lr := _number(event.get("learning_rate"), ".2e")) else None),
            (f"{tps} tok/s" if (tps := _number(event.get("tokens_per_second"), ".0f")) else None),
            (f"epoch {epoch}" if (epoch := _number(event.get("epoch"), ".2f")) else None),
            (f"ETA {eta}" if (eta := _eta(event.get("eta_seconds"))) else None),
        ]
        return "  ".join(p for p in parts if p)
    if kind == "started":
        line = f"training started on {event.get('device') or 'an unknown device'}"
        if event.get("precision"):
            line += f" ({event['precision']})"
        line += f": {event.get('examples', '?')} examples, {event.get('total_steps') or '?'} steps"
        if event.get("resumed_from"):
            line += f", resuming from {event['resumed_from']} at step {event.get('global_step', '?')}"
        return line
    if kind == "evaluation":
        loss, ppl = _number(event.get("eval_loss"), ".4f"), _number(event.get("perplexity"), ".2f")
        return f"eval at step {event.get('step')}: " + (f"eval loss {loss}, perplexity {ppl}" if loss else "no loss")
    if kind == "checkpoint":
        return f"checkpoint saved at step {event.get('step')}: {event.get('path')}"
    if kind == "finished":
        loss = _number((event.get("metrics") or {}).get("train_loss"), ".4f")
        return "training finished" + (f", train loss {loss}" if loss else "")
    if kind == "cancelled":
        saved = f", checkpoint {event['checkpoint']}" if event.get("checkpoint") else ", no checkpoint"
        return f"cancelled at step {event.get('step')}{saved}"
    if kind == "error":
        return f"error [{event.get('code')}] {event.get('message')}"
    return None


def trainer_command(spec_path: str | Path, python: str | None = None, devices: int = 1) -> list[str]:
    """The argv that starts the child (torchrun with one process per device when `devices` > 1); run it with the
    repository root as the working directory (or on PYTHONPATH) so that `projects` imports."""
    return launch_command(spec_path, devices, python or sys.executable)
