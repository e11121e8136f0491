"""A run's own files: its folder inside the project's output directory, its checkpoints, the artifacts it left,
whether they are still on disk, and which checkpoint a resume may continue from.

Each run writes only under `<output directory>/run-<id>/` (checkpoints included), so one run's checkpoint
rotation or final save can never delete or overwrite another run's files. Rows from before runs had folders
of their own point at the project's output directory itself; they are read the same way.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field

from mtm.shared.claims import Standing, standing
from mtm.shared.nofollow import open_file_nofollow
from mtm.shared.problems import Problem
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.config import RunConfig, run_config
from projects.trainer.outputs import MANIFEST_NAME, MERGED_DIR, checkpoints

RUN_FOLDER_PREFIX = "run-"
_CHECKPOINT_STEP = re.compile(r"checkpoint-(\d+)$")
_STATE_BYTES = 1024 * 1024


def work_folder(run_id: int) -> Path:
    """The portal's own folder for a run (its spec, the full trainer log, the dataset snapshot)."""
    return Path(settings.VAR_DIR) / "runs" / str(run_id)


def run_folder(output_directory: str, run_id: int) -> str:
    """The folder run `run_id` writes to: a child of the project's output directory, as it resolves now."""
    return os.path.join(os.path.realpath(output_directory), f"{RUN_FOLDER_PREFIX}{run_id}")


def run_checkpoints(run: TrainingRun) -> list[Path]:
    """The run's complete checkpoint-N folders (with trainer_state.json), lowest step first."""
    if not run.run_folder:
        return []
    try:
        return checkpoints(Path(run.run_folder))
    except OSError:  # unreadable or vanished folder: nothing to resume from
        return []


def latest_run_checkpoint(run: TrainingRun) -> Path | None:
    found = run_checkpoints(run)
    return found[-1] if found else None


def checkpoint_step(path: str | Path | None) -> int | None:
    match = _CHECKPOINT_STEP.search(str(path or ""))
    return int(match.group(1)) if match else None


class Artifact(BaseModel):
    """A path a run wrote, and whether it is still there; the run page and the API (model_dump) show it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="folder, model, adapter, manifest or checkpoint")
    label: str
    path: str
    exists: bool = Field(description="False when it is gone from disk (deleted or moved since).")


def _artifact(name: str, label: str, path: Path | str) -> Artifact:
    return Artifact(name=name, label=label, path=str(path), exists=os.path.exists(path))


def run_artifacts(run: TrainingRun, config: RunConfig | None = None) -> list[Artifact]:
    """The paths the run wrote, each with whether it is still there. A succeeded run's final model sits where
    its method puts it (projects.trainer.outputs); a stopped run may have left a checkpoint."""
    if not run.run_folder:
        return []
    config = config or run_config(run)
    folder = Path(run.run_folder)
    found = [_artifact("folder", "Run folder", folder)]
    if run.status == RunStatus.SUCCEEDED or (folder / MANIFEST_NAME).is_file():
        if config.method == "full":
            found.append(_artifact("model", "Model", folder))
        else:
            found.append(_artifact("adapter", "LoRA adapter", folder / "adapter_config.json"))
            if config.values.merge_after_training:
                found.append(_artifact("model", "Merged model", folder / MERGED_DIR))
        found.append(_artifact("manifest", "Manifest", folder / MANIFEST_NAME))
    if run.last_checkpoint:
        found.append(_artifact("checkpoint", "Last checkpoint", run.last_checkpoint))
    return found


def files_missing(run: TrainingRun, artifacts: list[Artifact]) -> bool:
    """A succeeded run whose output is gone from disk (deleted or moved since), or whose folder is no longer the one
    its train stage created (another folder, or a link, stands at its path: projects.runs.folder reads nothing
    there)."""
    if run.status != RunStatus.SUCCEEDED:
        return False
    if any(not a.exists for a in artifacts if a.name != "checkpoint"):
        return True
    if not run.run_folder:
        return False
    return standing(run.run_folder, run.run_folder_identity)[0] is not Standing.INTACT


# --- resume --------------------------------------------------------------------------------------------------


def _refused(message: str, hint: str, code: str = "no_checkpoint") -> Problem:
    return Problem(code, message, hint)


def resume_source(project: TrainingProject, source: TrainingRun | None) -> tuple[TrainingRun, Path]:
    """The run and checkpoint a resume continues from: `source` when given (a run of this project), else the
    project's latest run. Raises ResumeRefused when that run is not of this project, is still live, or left no
    complete checkpoint of its own."""
    if source is None:
        source = project.runs.order_by("-created_at", "-id").first()
        if source is None:
            raise ResumeRefused(
                _refused(
                    f"Cannot resume: there is no checkpoint to resume from, project '{project.name}' has no run yet.",
                    "Start a fresh run; a run saves a checkpoint every 'save_steps' steps and when cancelled.",
                )
            )
    if source.project_id != project.pk:
        raise ResumeRefused(
            _refused(
                f"Cannot resume from run {source.pk}: it is a run of another project.",
                f"Pick one of the runs of project '{project.name}'.",
                code="resume_other_project",
            )
        )
    if source.is_live:
        raise ResumeRefused(
            _refused(
                f"Cannot resume from run {source.pk}: it is still {source.status}.",
                "Wait for it to end (or cancel it), then resume from its checkpoint.",
                code="resume_live_run",
            )
        )
    checkpoint = latest_run_checkpoint(source)
    if checkpoint is None:
        where = source.run_folder or "its folder"
        raise ResumeRefused(
            _refused(
                f"Cannot resume from run {source.pk}: there is no complete checkpoint in {where} "
                "(no checkpoint-N folder with a trainer_state.json).",
                "Start a fresh run instead, or pick another run of this project that left a checkpoint; a run saves "
                "one every 'save_steps' steps and when cancelled.",
            )
        )
    return source, checkpoint


def _trained_state(checkpoint: Path) -> dict[str, Any] | Problem:
    """The checkpoint's trainer_state.json, or why it cannot be resumed from. Opened without following any link
    and without waiting (a FIFO swapped in for it is refused, never read: this runs inside Start's locks), and read
    only up to _STATE_BYTES."""
    path = checkpoint / "trainer_state.json"
    try:
        fd = open_file_nofollow(str(path))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            why = "is reached through a link"
        elif exc.errno == errno.EINVAL:
            why = "is not a regular file (a FIFO, device or socket)"
        else:
            why = f"cannot be read ({exc.strerror or exc})"
        return _refused(
            f"Cannot resume from {checkpoint.name}: {path} {why}; a checkpoint the trainer wrote holds only regular "
            "files in its run's own folder.",
            "Start a fresh run, or pick another run of this project that left a checkpoint.",
            code="checkpoint_unsafe",
        )
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(_STATE_BYTES + 1)
        state = json.loads(data) if len(data) <= _STATE_BYTES else {}
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def nothing_left_to_train(checkpoint: Path, config: RunConfig) -> Problem | None:
    """Why resuming from `checkpoint` with `config` would train nothing (or cannot be done from it), or None. Only
    max_steps (or the epochs) can be compared here; the trainer compares the step count again once it knows the
    data's size."""
    state = _trained_state(checkpoint)
    if isinstance(state, Problem):
        return state
    step = state.get("global_step")
    if isinstance(step, bool) or not isinstance(step, int):
        step = checkpoint_step(checkpoint)
    hp = config.values
    if step is None:
        return None
    if hp.max_steps > 0 and step >= hp.max_steps:
        return _refused(
            f"Nothing left to train: {checkpoint.name} is already at step {step}, and max_steps is {hp.max_steps}.",
            f"Raise max_steps above {step} in the project's settings to train further, or start a fresh run.",
            code="nothing_to_resume",
        )
    epoch = state.get("epoch")
    if hp.max_steps <= 0 and isinstance(epoch, int | float) and not isinstance(epoch, bool) and epoch >= hp.epochs:
        return _refused(
            f"Nothing left to train: {checkpoint.name} has already trained {epoch:g} epochs, and epochs is "
            f"{hp.epochs:g}.",
            f"Raise epochs above {epoch:g} (or set max_steps above {step}) to train further, or start a fresh run.",
            code="nothing_to_resume",
        )
    return None


def resumable_checkpoint(run: TrainingRun) -> Path | None:
    """The checkpoint a Resume button offers for `run`: its latest, when the run can be resumed and the project's
    settings as they are now would train past it (a run that reached max_steps offers none)."""
    if not RunStatus(run.status).resumable or (checkpoint := latest_run_checkpoint(run)) is None:
        return None
    return None if nothing_left_to_train(checkpoint, RunConfig.of_project(run.project)) else checkpoint


class ResumeRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def history_before_resume(run: TrainingRun) -> list[dict[str, Any]]:
    """The loss points a resumed run inherits: its source run's (itself possibly resumed) up to the checkpoint
    it continues from, so its chart and progress tell the whole history."""
    from projects.runs.columns import read_eval_points, read_metrics

    if not run.resume or run.resume_source is None:
        return []
    step = checkpoint_step(run.resumed_from)
    points = read_metrics(run.resume_source.metrics)
    kept = [p.model_dump() for p in points if p.step is not None and (step is None or p.step <= step)]
    evaluations = read_eval_points(run.resume_source.metrics)
    return kept + [p.model_dump() for p in evaluations if step is None or (p.step or 0) <= step]
