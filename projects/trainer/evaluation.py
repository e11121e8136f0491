"""Evaluation during training: the eval set's loss and perplexity every eval_steps, reported as events, and the
checkpoint with the lowest eval loss kept (and made the result) when the run asks for it.

How the best checkpoint is kept: with keep_best_eval the Trainer tracks "eval_loss" as its best metric (so checkpoint
rotation never deletes the best one), and this callback asks for a checkpoint at every evaluation that beats the
best so far, whatever save_steps says. After training the run loads that checkpoint's weights before saving.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

from projects.trainer.progress import Emit

BEST_METRIC = "eval_loss"


def perplexity(loss: float | None) -> float | None:
    """exp(loss), or None when there is no loss or it is too large to mean anything (exp overflows)."""
    if loss is None or not math.isfinite(loss) or loss > 700:
        return None
    return math.exp(loss)


def evaluation_arguments(has_eval_set: bool, eval_steps: int, batch_size: int, keep_best: bool) -> dict[str, Any]:
    """The TrainingArguments that turn evaluation on (none without an eval set)."""
    if not has_eval_set:
        return {"eval_strategy": "no"}
    arguments: dict[str, Any] = {
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "per_device_eval_batch_size": batch_size,
        "prediction_loss_only": True,
    }
    if keep_best:
        arguments["metric_for_best_model"] = BEST_METRIC
        arguments["greater_is_better"] = False
    return arguments


class EvalReporter(TrainerCallback):
    """Emits an "evaluation" event per evaluation; with `keep_best`, saves a checkpoint at each new best."""

    def __init__(self, emit: Emit, *, keep_best: bool) -> None:
        self.emit = emit
        self.keep_best = keep_best
        self.history: list[dict[str, Any]] = []
        self.best_step: int | None = None
        self.best_loss: float | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get(BEST_METRIC)
        loss = float(loss) if isinstance(loss, int | float) and math.isfinite(loss) else None
        if loss is not None and (self.best_loss is None or loss < self.best_loss):
            self.best_step, self.best_loss = state.global_step, loss
            if self.keep_best:
                control.should_save = True  # the Trainer saves right after this hook, and records it as the best
        point = {"step": state.global_step, "eval_loss": loss, "perplexity": perplexity(loss)}
        self.history.append(point)
        self.emit("evaluation", **point, best_step=self.best_step, best_eval_loss=self.best_loss)
        return control

    @property
    def last_loss(self) -> float | None:
        return self.history[-1]["eval_loss"] if self.history else None


def keep_best(trainer: Any, reporter: EvalReporter) -> int | None:
    """Load the best evaluation's checkpoint into the trainer's model; the step it came from, or None when the last
    step is the best (or nothing was evaluated)."""
    state = trainer.state
    best = state.best_model_checkpoint
    if not reporter.keep_best or not best or state.best_global_step in (None, 0, state.global_step):
        return None
    trainer._load_best_model()  # the Trainer's own loader: full weights, sharded or not, or a LoRA adapter
    return int(state.best_global_step)
