"""Projects and runs in the API's JSON contract (API v1): plain dicts the API returns and the pages may render.

Blank text columns that the contract calls nullable become None; JSON columns that an older row or a worker
left partial are filled out, so every dict has every key with the type the contract promises.
"""

from __future__ import annotations

import math
from typing import Any

from projects.hyperparameters import Hyperparameters
from projects.models import TrainingProject, TrainingRun

PROGRESS_KEYS = ("step", "total_steps", "epoch", "loss", "learning_rate", "tokens_per_second", "eta_seconds")
PROGRESS_INTS = ("step", "total_steps")
METRIC_KEYS = ("step", "loss", "learning_rate", "tokens_per_second")
_UNSET: Any = object()


def _or_none(text: str | None) -> str | None:
    return text or None


def _number(value: Any, *, whole: bool = False) -> int | float | None:
    """A finite JSON number, or None for anything else (a missing key, a string, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if whole:
        return int(value) if float(value).is_integer() else None
    return float(value)


def progress_dict(progress: Any) -> dict[str, int | float | None]:
    data = progress if isinstance(progress, dict) else {}
    return {key: _number(data.get(key), whole=key in PROGRESS_INTS) for key in PROGRESS_KEYS}


def metrics_list(metrics: Any) -> list[dict[str, int | float | None]]:
    points = metrics if isinstance(metrics, list) else []
    return [
        {key: _number(point.get(key), whole=key == "step") for key in METRIC_KEYS}
        for point in points
        if isinstance(point, dict)
    ]


def validation_dict(report: Any) -> dict[str, Any] | None:
    if not isinstance(report, dict):
        return None
    checks = [
        {
            "name": str(check.get("name", "")),
            "passed": bool(check.get("passed")),
            "detail": str(check.get("detail") or ""),
            "seconds": _number(check.get("seconds")) or 0.0,
        }
        for check in report.get("checks") or []
        if isinstance(check, dict)
    ]
    prompt = report.get("prompt")
    return {
        "passed": bool(report.get("passed")),
        "checks": checks,
        "sample_output": str(report.get("sample_output") or ""),
        "prompt": prompt if isinstance(prompt, str) else None,
    }


def run_dict(run: TrainingRun) -> dict[str, Any]:
    error = None
    if run.error_code or run.error_message:
        error = {"code": run.error_code or "error", "message": run.error_message, "hint": run.error_hint}
    resolved = None
    if run.resolved_path:
        resolved = {
            "source": run.resolved_source or None,
            "path": run.resolved_path,
            "revision": _or_none(run.resolved_revision),
        }
    return {
        "id": run.pk,
        "project_id": run.project_id,
        "status": run.status,
        "stage_failed": _or_none(run.stage_failed),
        "error": error,
        "resolved_model": resolved,
        "device": _or_none(run.device),
        "progress": progress_dict(run.progress),
        "metrics": metrics_list(run.metrics),
        "validation": validation_dict(run.validation),
        "resume": run.resume,
        "resumed_from": _or_none(run.resumed_from),
        "last_checkpoint": _or_none(run.last_checkpoint),
        "cancel_requested": run.cancel_requested,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "log_tail": run.log_tail,
    }


def hyperparameters_dict(stored: Any) -> dict[str, Any]:
    """The values training uses: stored ones that are valid, defaults for the rest."""
    values, _ = Hyperparameters.from_dict(stored if isinstance(stored, dict) else {})
    return values.to_dict()


def project_dict(project: TrainingProject, last_run: TrainingRun | None = _UNSET) -> dict[str, Any]:
    """`last_run` may be passed when the caller fetched it already (a list page); by default it is queried."""
    run = project.last_run if last_run is _UNSET else last_run
    return {
        "id": project.pk,
        "name": project.name,
        "owner": project.owner.get_username(),
        "description": project.description,
        "model_name": project.model_name,
        "revision": _or_none(project.revision),
        "dataset_path": project.dataset_path,
        "dataset_format": _or_none(project.dataset_format),
        "output_directory": project.output_directory,
        "method": project.method,
        "hyperparameters": hyperparameters_dict(project.hyperparameters),
        "validation_prompt": project.validation_prompt,
        "created_at": project.created_at,
        "updated_at": project.updated_at,
        "last_run": run_dict(run) if run is not None else None,
    }
