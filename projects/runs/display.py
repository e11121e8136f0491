"""What the project and run pages show, computed from the rows: durations, the ETA, checkpoints, settings."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.utils import timezone

from projects.datasets.eval_split import describe_eval_file, describe_split
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs import config
from projects.runs.columns import RunProgress


def format_seconds(seconds: Any) -> str:
    """A duration a person reads at a glance: 45s, 3m 05s, 2h 07m, 1d 3h."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "—"
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def run_duration(run: TrainingRun, now: datetime | None = None) -> str:
    if run.started_at is None:
        return "—"
    end = run.finished_at or (now or timezone.now())
    return format_seconds((end - run.started_at).total_seconds())


def run_eta(run: TrainingRun, progress: RunProgress) -> str:
    if run.has_ended:  # a run stopped part-way is not "done": nothing is left to estimate
        return "done" if run.status == RunStatus.SUCCEEDED else "—"
    return format_seconds(progress.eta_seconds) if progress.eta_seconds is not None else "—"


def hyperparameter_rows(project: TrainingProject) -> list[tuple[str, str]]:
    """(label, shown value) for every hyperparameter that applies to the project's method."""
    values = project.hyperparameter_values.to_dict()
    return [(label, shown) for _, label, shown in config.hyperparameter_rows(values, project.method)]


def eval_source(project: TrainingProject) -> str:
    """The project's eval set in words: a separate file, a seeded share of the dataset, or none."""
    if project.eval_dataset_path:
        return describe_eval_file(project.eval_dataset_path, None)
    values = project.hyperparameter_values
    return describe_split(None, values.eval_fraction, values.seed)


# Without an eval set the base-vs-fine-tuned loss is still measured, on the dataset's last row held out for the
# validation prompt: the pages name that row as such, so "Eval set: none" and that loss never read as a contradiction.
NO_EVAL_SET_DURING_TRAINING = "none during training (no eval file, eval fraction 0): no eval loss while it trains"


def eval_set_text(source: str, split: str) -> str:
    """The run's eval set in words (projects.runs.evaluation.EvalOverview's source and split)."""
    return NO_EVAL_SET_DURING_TRAINING if source == "none" else split


def before_after_loss_label(source: str, rows: int | None) -> str:
    """What the validation's base-vs-fine-tuned loss was measured on: the eval set's rows (a separate file, or the
    share held out of the dataset), else the held-out validation row, which is not an eval set."""
    count = "?" if rows is None else str(rows)
    plural = "" if rows == 1 else "s"
    if source == "file":
        return f"Eval loss on {count} row{plural} of the eval file"
    if source == "fraction":
        return f"Eval loss on {count} row{plural} of the eval set (held out of the dataset)"
    if rows == 1:
        return "Loss on the held-out validation row (not an eval set)"
    return f"Loss on the {count} held-out validation rows (not an eval set)"


def before_after_short_label(source: str) -> str:
    """The compare page's word for the same loss, beside the eval loss of training."""
    return "eval loss" if source in ("file", "fraction") else "loss on the held-out validation row (not an eval set)"
