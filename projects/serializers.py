"""Projects and runs in the API's JSON contract (API v1): plain dicts the API returns and the pages may render.

Blank text columns that the contract calls nullable become None; the JSON columns are read through their typed
shapes (projects.runs.columns), so every dict has every key with the type the contract promises.
"""

from __future__ import annotations

from typing import Any

from mtm.shared.problems import Problem
from projects.models import TrainingProject, TrainingRun
from projects.runs.columns import RunProgress, RunSummary, ValidationReport, read_eval_points, read_metrics
from projects.runs.config import run_config
from projects.runs.records import files_missing, run_artifacts
from projects.runs.scheduling.placement import place_in_line

_UNSET: Any = object()


def _or_none(text: str | None) -> str | None:
    return text or None


def run_dict(run: TrainingRun) -> dict[str, Any]:
    error = None
    if run.error_code or run.error_message:
        error = Problem(run.error_code or "error", run.error_message, run.error_hint).model_dump()
    resolved = None
    if run.resolved_path:
        resolved = {
            "source": run.resolved_source or None,
            "path": run.resolved_path,
            "revision": _or_none(run.resolved_revision),
        }
    report = ValidationReport.read(run.validation)
    config = run_config(run)
    artifacts = run_artifacts(run, config)
    return {
        "id": run.pk,
        "project_id": run.project_id,
        "status": run.status,
        "stage_failed": _or_none(run.stage_failed),
        "error": error,
        "resolved_model": resolved,
        "device": _or_none(run.device),
        "effective_batch": config.values.effective_batch,
        "progress": RunProgress.read(run.progress).model_dump(),
        "metrics": [point.model_dump() for point in read_metrics(run.metrics)],
        "eval_metrics": [point.model_dump() for point in read_eval_points(run.metrics)],
        "validation": None if report is None else report.model_dump(),
        "summary": RunSummary.read(run.summary).model_dump(),
        "resume": run.resume,
        "resume_from_run": run.resume_source_id,
        "resumed_from": _or_none(run.resumed_from),
        "last_checkpoint": _or_none(run.last_checkpoint),
        "run_folder": _or_none(run.run_folder),
        "output_directory": _or_none(run.run_folder),
        "artifacts": [artifact.model_dump() for artifact in artifacts],
        "files_missing": files_missing(run, artifacts),
        "config": config.model_dump(),
        "cancel_requested": run.cancel_requested,
        "waiting": _or_none(str(place_in_line(run) or "")),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "log_tail": run.log_tail,
    }


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
        "eval_dataset_path": _or_none(project.eval_dataset_path),
        "eval_dataset_sha256": _or_none(project.eval_dataset_sha256),
        "output_directory": project.output_directory,
        "method": project.method,
        "hyperparameters": project.hyperparameter_values.to_dict(),
        "validation_prompt": project.validation_prompt,
        "created_at": project.created_at,
        "updated_at": project.updated_at,
        "last_run": run_dict(run) if run is not None else None,
    }
