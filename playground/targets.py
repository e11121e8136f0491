"""What a conversation talks to, as folders to load: a succeeded run's result (its full model, its merged folder, or
its adapter over the base model) or a registry model. Reads only small files (the run's manifest), so it serves the
web process (to refuse early, clearly) and the inference worker (which resolves again against its own disk)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from models_registry.lookup import resolve_model
from models_registry.models import ModelOverride
from mtm.shared.problems import Problem
from projects.models import RunStatus, TrainingRun
from projects.runs.config import run_config
from projects.runs.folder import RUN_FILES_MISSING, RunFolderRefused, open_run_folder
from projects.runs.manifest import ManifestInvalid, ManifestMissing, read_manifest
from projects.trainer.outputs import MANIFEST_NAME

CHAT_HINT = (
    "Chat with another succeeded run, or ask the project's owner to put the run's own folder back at that path "
    "(the one it trained in) or to train the project again."
)


@dataclass(frozen=True)
class LoadSpec:
    """Folders for the worker: `model_dir` (a complete model) or `adapter_dir` over `base_model_path`."""

    label: str
    tokenizer_dir: str
    model_dir: str | None = None
    adapter_dir: str | None = None
    base_model_path: str | None = None
    trust_remote_code: bool = False
    # A run's target: its folder as the worker made it, opened again when the model is loaded (playground.engine).
    run_id: int | None = None
    run_folder: str | None = None
    run_folder_identity: str = ""
    # The registry folder loaded (`model_dir` of a registry model, or a run's `base_model_path`): where it was
    # resolved from ("cache", "override", "portal"), its name and revision; the worker holds it as resolved
    # (playground.held_model).
    registry_source: str = ""
    registry_name: str = ""
    registry_revision: str = ""

    @property
    def key(self) -> str:
        return "|".join(str(v) for v in (self.model_dir, self.adapter_dir, self.base_model_path))


class TargetError(Exception):
    def __init__(self, problem: Problem, status: int = 422):
        super().__init__(problem.message)
        self.problem = problem
        self.status = status


def for_model(model_name: str, revision: str = "") -> LoadSpec:
    resolution = resolve_model(model_name, revision or None)
    if not resolution.valid or not resolution.path:
        first = resolution.errors[0] if resolution.errors else Problem("model_not_found", f"Model '{model_name}'.")
        raise TargetError(Problem(first.code, first.message, first.hint))
    label = model_name + (f"@{revision}" if revision else "")
    return LoadSpec(
        label=label,
        tokenizer_dir=resolution.path,
        model_dir=resolution.path,
        trust_remote_code=bool(resolution.trust_remote_code),
        registry_source=resolution.source or "",
        registry_name=model_name,
        registry_revision=resolution.revision or revision,
    )


def _run_trusts_remote_code(run: TrainingRun) -> bool:
    if run.resolved_source != "override":
        return False
    name = run_config(run).model_name
    return ModelOverride.objects.filter(model_name=name, enabled=True, trust_remote_code=True).exists()


def _output_missing(run: TrainingRun, why: str) -> Problem:
    return Problem(
        "run_output_missing",
        f"Run {run.pk}'s result cannot be read: {why}.",
        "The run's output folder was moved or removed after it succeeded; start a new run of its project.",
    )


def for_run(run: TrainingRun) -> LoadSpec:
    if run.status != RunStatus.SUCCEEDED:
        raise TargetError(
            Problem(
                "run_not_succeeded",
                f"Run {run.pk} is {run.status}: only a run that succeeded has a model to chat with.",
                "Pick a run whose status is succeeded, or wait for this one to finish.",
            )
        )
    output = Path(run.run_folder or "")
    label = f"run {run.pk} ({run_config(run).model_name})"
    try:
        folder_fd = open_run_folder(run, CHAT_HINT)  # the folder the worker made, never one swapped in since
    except RunFolderRefused as refused:
        if refused.problem.code == RUN_FILES_MISSING:
            raise TargetError(_output_missing(run, "its folder is not on disk"), status=409) from None
        raise TargetError(refused.problem, status=409) from None
    try:
        layout = read_manifest(folder_fd)["layout"]
        model_dir, adapter_dir = layout.get("model_dir"), layout.get("adapter_dir")
    except (ManifestMissing, ManifestInvalid, KeyError, TypeError, AttributeError) as exc:
        raise TargetError(_output_missing(run, f"{output / MANIFEST_NAME}: {type(exc).__name__}"), status=409) from None
    finally:
        os.close(folder_fd)
    trust = _run_trusts_remote_code(run)
    made = {"run_id": run.pk, "run_folder": str(output), "run_folder_identity": run.run_folder_identity}
    if model_dir:
        folder = str(output / model_dir)
        return LoadSpec(label=label, tokenizer_dir=folder, model_dir=folder, trust_remote_code=trust, **made)
    if not adapter_dir or not run.resolved_path:
        raise TargetError(
            Problem(
                "run_output_missing",
                f"Run {run.pk}'s manifest names no model folder and no adapter with a base model.",
                "Start a new run of its project.",
            ),
            status=409,
        )
    adapter = str(output / adapter_dir)
    return LoadSpec(
        label=label,
        tokenizer_dir=adapter,
        adapter_dir=adapter,
        base_model_path=run.resolved_path,
        trust_remote_code=trust,
        registry_source=run.resolved_source or "",
        registry_name=run_config(run).model_name,
        registry_revision=run.resolved_revision or "",
        **made,
    )
