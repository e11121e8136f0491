"""What the project and run pages show, computed from the rows: progress, durations, checkpoints, settings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.utils import timezone

from projects.hyperparameters import Hyperparameters
from projects.models import TrainingMethod, TrainingProject, TrainingRun

STATUS_BADGES = {
    "succeeded": "badge-ok",
    "failed": "badge-error",
    "cancelled": "badge-muted",
    "queued": "badge-live",
    "resolving": "badge-live",
    "training": "badge-live",
    "validating": "badge-live",
}

HYPERPARAMETER_LABELS = {
    "epochs": "Epochs",
    "max_steps": "Max steps",
    "learning_rate": "Learning rate",
    "batch_size": "Batch size",
    "gradient_accumulation_steps": "Gradient accumulation steps",
    "max_seq_length": "Max sequence length",
    "warmup_ratio": "Warmup ratio",
    "warmup_steps": "Warmup steps",
    "weight_decay": "Weight decay",
    "seed": "Seed",
    "packing": "Packing",
    "precision": "Precision",
    "gradient_checkpointing": "Gradient checkpointing",
    "save_steps": "Save a checkpoint every (steps)",
    "save_total_limit": "Checkpoints kept",
    "logging_steps": "Log every (steps)",
    "lora_r": "LoRA r",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "lora_target_modules": "LoRA target modules",
    "merge_after_training": "Merge after training",
}
LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge_after_training")


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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class Progress:
    step: int | None
    total_steps: int | None
    percent: float | None
    epoch: float | None
    loss: float | None
    learning_rate: float | None
    tokens_per_second: float | None
    eta: str

    @property
    def started(self) -> bool:
        return self.step is not None


def run_progress(run: TrainingRun) -> Progress:
    data = run.progress if isinstance(run.progress, dict) else {}
    step, total = _number(data.get("step")), _number(data.get("total_steps"))
    percent = None
    if step is not None and total:
        percent = max(0.0, min(100.0, step / total * 100))
    eta = data.get("eta_seconds")
    return Progress(
        step=None if step is None else int(step),
        total_steps=None if total is None else int(total),
        percent=percent,
        epoch=_number(data.get("epoch")),
        loss=_number(data.get("loss")),
        learning_rate=_number(data.get("learning_rate")),
        tokens_per_second=_number(data.get("tokens_per_second")),
        eta="done" if run.has_ended else format_seconds(eta) if eta is not None else "—",
    )


def latest_checkpoint(project: TrainingProject) -> Path | None:
    """The newest checkpoint-N folder (with trainer_state.json) in the project's output directory, if any."""
    from projects.trainer.outputs import checkpoints

    try:
        found = checkpoints(Path(project.output_directory))
    except OSError:  # unreadable or vanished output directory: nothing to resume from
        return None
    return found[-1] if found else None


def hyperparameter_rows(project: TrainingProject) -> list[tuple[str, str]]:
    """(label, shown value) for every hyperparameter that applies to the project's method."""
    values = {**Hyperparameters().to_dict(), **(project.hyperparameters or {})}
    rows = []
    for key, label in HYPERPARAMETER_LABELS.items():
        if key in LORA_KEYS and project.method != TrainingMethod.LORA:
            continue
        value = values.get(key)
        if key == "max_steps" and not value:
            shown = "0 (train for the epochs)"
        elif key == "warmup_steps" and not value:
            shown = "0 (the warmup ratio applies)"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        elif isinstance(value, list):
            shown = ", ".join(str(item) for item in value)
        else:
            shown = str(value)
        rows.append((label, shown))
    return rows


CHECK_LABELS = {
    "files": "File checks",
    "json": "Format validation (JSON)",
    "load": "Loading test",
    "inference": "Inference test",
}


def validation_checks(report: Any) -> list[dict[str, Any]]:
    """The validation report's checks with a readable label; a malformed entry is skipped, not a 500."""
    checks = report.get("checks") if isinstance(report, dict) else None
    rows = []
    for check in checks if isinstance(checks, list) else []:
        if not isinstance(check, dict):
            continue
        name = str(check.get("name", ""))
        rows.append(
            {
                "name": name,
                "label": CHECK_LABELS.get(name, name or "check"),
                "passed": bool(check.get("passed")),
                "detail": str(check.get("detail") or ""),
                "seconds": _number(check.get("seconds")),
            }
        )
    return rows
