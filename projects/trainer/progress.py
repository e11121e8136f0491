"""The Trainer callback that reports progress as events and turns a cancel request into a clean stop.

Cost per optimizer step: one clock read, one stat() of the cancel file and a few additions; an event line is
printed at most every `interval` seconds, on logging steps, and on the first and the last step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

Emit = Callable[..., None]


class EvaluationCancelled(Exception):
    """Raised out of an evaluation pass when the run is cancelled: the run ends cancelled at the step before it, and
    resumes from its latest checkpoint."""


class ProgressReporter(TrainerCallback):
    def __init__(
        self,
        emit: Emit,
        *,
        interval: float,
        cancel_file: Path | None,
        real_tokens: Callable[[], int],
        started_fields: dict[str, Any] | None = None,
        setup_started: float | None = None,
        output_dir: Path | None = None,
        logged_fields: dict[str, str] | None = None,
    ) -> None:
        self.emit = emit
        # Further values of the Trainer's logs that become fields of logged progress events and of the history
        # (log key -> field name), e.g. the DPO reward metrics.
        self.logged_fields = dict(logged_fields or {})
        self.logged: dict[str, float] = {}
        self.started_fields = dict(started_fields or {})
        self.setup_started = setup_started
        self.output_dir = output_dir  # the folder as checkpoint events name it; the Trainer may write to "."
        self.interval = interval
        self.cancel_file = str(cancel_file) if cancel_file else None
        self.real_tokens = real_tokens
        self.cancel_requested = False  # set by a SIGTERM handler, or found through the cancel file
        # Chaos hook for the fault tests and for operators rehearsing failures: raise at this global step.
        self.fault_at_step = int(os.environ.get("MTM_FAULT_RAISE_AT_STEP") or 0)
        self.cancelled_at_step: int | None = None
        self.last_checkpoint: str | None = None
        self.loss: float | None = None
        self.learning_rate: float | None = None
        self.history: list[dict[str, Any]] = []
        self._begin_step = 0
        self._first_step_time: float | None = None
        self._first_step_tokens = 0
        self._last_emit_time = 0.0
        self._last_emit_tokens = 0
        self._last_emit_step = 0

    # -- Trainer hooks -----------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        """Emits "started": the Trainer has built its optimizer and, when resuming, loaded the checkpoint."""
        fields = dict(self.started_fields)
        if self.setup_started is not None:
            timings = dict(fields.get("timings") or {})
            timings["trainer_setup"] = round(time.monotonic() - self.setup_started, 3)
            fields["timings"] = timings
        self.emit("started", total_steps=state.max_steps, global_step=state.global_step, **fields)
        self._begin_step = state.global_step
        self._last_emit_step = state.global_step
        self._last_emit_time = time.monotonic()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        first = self._first_step_time is None
        if first:
            self._first_step_time = now
            self._first_step_tokens = self.real_tokens()
        due = first or now - self._last_emit_time >= self.interval or state.global_step >= state.max_steps
        if due and not control.should_log:  # on a logging step on_log reports, with the fresh loss
            self._report(state, now)
        if self.fault_at_step and state.global_step >= self.fault_at_step:
            raise RuntimeError(f"Injected fault at step {state.global_step} (MTM_FAULT_RAISE_AT_STEP is set).")
        if state.global_step >= state.max_steps:
            return control  # the run is complete: a late cancel request changes nothing
        if self._cancel_asked():
            self.cancelled_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False  # a cancelled run saves and stops; an eval pass could take minutes
        return control

    def on_prediction_step(self, args, state, control, **kwargs):
        """Between eval batches: a cancel (or SIGTERM) stops an evaluation pass, which may be long (a big eval
        file), instead of waiting for the step after it."""
        if state.global_step < state.max_steps and self._cancel_asked():
            self.cancelled_at_step = state.global_step
            raise EvaluationCancelled(state.global_step)
        return control

    def _cancel_asked(self) -> bool:
        if self.cancel_requested or (self.cancel_file and os.path.exists(self.cancel_file)):
            self.cancel_requested = True
        return self.cancel_requested

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return control
        self.loss = float(logs["loss"])
        self.learning_rate = float(logs.get("learning_rate", self.learning_rate or 0.0))
        self.logged = {name: float(logs[key]) for key, name in self.logged_fields.items() if key in logs}
        point = {"step": state.global_step, "loss": self.loss, "learning_rate": self.learning_rate, **self.logged}
        point["tokens_per_second"] = self._report(state, time.monotonic(), logged=True)
        self.history.append(point)
        return control

    def on_save(self, args, state, control, **kwargs):
        path = (self.output_dir or Path(args.output_dir)) / f"checkpoint-{state.global_step}"
        self.last_checkpoint = str(path)
        self.emit("checkpoint", path=str(path), step=state.global_step)
        return control

    # -- reporting ---------------------------------------------------------------------------------------------

    def session_tokens_per_second(self) -> float | None:
        """Real tokens per second since the first step of this session ended (start-up and the first,
        slowest step excluded), or None before the second step."""
        if self._first_step_time is None:
            return None
        seconds = time.monotonic() - self._first_step_time
        tokens = self.real_tokens() - self._first_step_tokens
        return tokens / seconds if seconds > 0 and tokens > 0 else None

    def _report(self, state, now: float, logged: bool = False) -> float | None:
        tokens = self.real_tokens()
        window = now - self._last_emit_time
        rate = (tokens - self._last_emit_tokens) / window if window > 0 else None
        steps_done = state.global_step - self._begin_step
        eta = None
        if self._first_step_time is not None and steps_done > 1 and now > self._first_step_time:
            per_step = (now - self._first_step_time) / (steps_done - 1)
            eta = max(0.0, (state.max_steps - state.global_step) * per_step)
        self.emit(
            "progress",
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=round(state.epoch or 0.0, 4),
            loss=self.loss,
            learning_rate=self.learning_rate,
            tokens_per_second=round(rate, 1) if rate is not None else None,
            eta_seconds=round(eta, 1) if eta is not None else None,
            logged=logged,  # true: a logging step, the loss is fresh (a point for the loss chart)
            **(self.logged if logged else {}),
        )
        self._last_emit_time, self._last_emit_tokens, self._last_emit_step = now, tokens, state.global_step
        return round(rate, 1) if rate is not None else None
