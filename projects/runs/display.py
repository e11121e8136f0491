"""What the project and run pages show, computed from the rows: durations, the ETA, checkpoints, settings."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.utils import timezone

from projects.datasets.eval_split import describe_eval_file, describe_split
from projects.hyperparameters import Hyperparameters
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
    values = Hyperparameters.from_stored(project.hyperparameters).to_dict()
    return [(label, shown) for _, label, shown in config.hyperparameter_rows(values, project.method)]


def eval_source(project: TrainingProject) -> str:
    """The project's eval set in words: a separate file, a seeded share of the dataset, or none."""
    if project.eval_dataset_path:
        return describe_eval_file(project.eval_dataset_path, None)
    values = Hyperparameters.from_stored(project.hyperparameters)
    return describe_split(None, values.eval_fraction, values.seed)
