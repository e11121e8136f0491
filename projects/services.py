"""Creating and changing projects: every field checked with the same code the page, the API and the worker use.

A project whose model, output directory or dataset does not validate is refused with the resolver's and the
validators' own Problem objects, keyed by the field they belong to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from models_registry.resolution import Resolution
from models_registry.services import dataset_roots, resolve_model, validate_output_dir
from models_registry.trainability import training_refusal
from mtm.shared.problems import Problem
from projects.datasets import DatasetReport, check_dataset_path, inspect_dataset
from projects.hyperparameters import Hyperparameters
from projects.models import LIVE_STATUSES, TrainingMethod, TrainingProject

EDITABLE = (
    "name",
    "description",
    "model_name",
    "revision",
    "dataset_path",
    "output_directory",
    "method",
    "hyperparameters",
    "validation_prompt",
)
NAME_MAX = 120
# What a queued or running run reads from the project: frozen while one is live.
TRAINING_FIELDS = ("model_name", "revision", "dataset_path", "output_directory", "method", "hyperparameters")


@dataclass
class ProjectCheck:
    errors: dict[str, list[Problem]] = field(default_factory=dict)
    warnings: dict[str, list[Problem]] = field(default_factory=dict)
    resolution: Resolution | None = None
    dataset: DatasetReport | None = None
    hyperparameters: Hyperparameters | None = None
    cleaned: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(self.errors.values())

    def error(self, name: str, problem: Problem) -> None:
        self.errors.setdefault(name, []).append(problem)

    def all_errors(self) -> list[Problem]:
        return [p for problems in self.errors.values() for p in problems]

    def to_dict(self) -> dict:
        return {
            "valid": self.valid,
            "errors": {k: [p.to_dict() for p in v] for k, v in self.errors.items() if v},
            "warnings": {k: [p.to_dict() for p in v] for k, v in self.warnings.items() if v},
        }


class ProjectInvalid(Exception):
    def __init__(self, check: ProjectCheck):
        super().__init__("; ".join(p.message for p in check.all_errors()))
        self.check = check


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str, revision_key: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)  # never the model's own code here


def load_tokenizer(resolution: Resolution):
    """The resolved model's tokenizer (cached by folder and revision), or None when it cannot be loaded."""
    try:
        return _tokenizer(resolution.path, resolution.revision or "")
    except Exception:  # a tokenizer the resolver accepted but transformers cannot load: token stats are skipped
        return None


def _text(data: dict, key: str) -> str:
    value = data.get(key, "")
    return value.strip() if isinstance(value, str) else ""


def check_project(data: dict[str, Any], *, inspect_tokens: bool = True) -> ProjectCheck:
    """Check a project's fields (a complete set, as from the form or the API after defaults are applied)."""
    check = ProjectCheck()
    name = _text(data, "name")
    if not name:
        check.error(
            "name", Problem("name_required", "Give the project a name.", "A short name your team will recognise.")
        )
    elif len(name) > NAME_MAX:
        check.error(
            "name", Problem("name_too_long", f"The name is {len(name)} characters; the limit is {NAME_MAX}.", "")
        )
    method = data.get("method") or TrainingMethod.LORA
    if method not in TrainingMethod.values:
        check.error("method", Problem("invalid_method", f"Unknown method {method!r}.", "Use 'full' or 'lora'."))
    hp, problems = Hyperparameters.from_dict(data.get("hyperparameters") or {})
    for problem in problems:
        check.error("hyperparameters", problem)
    check.hyperparameters = hp

    model_name, revision = data.get("model_name", ""), _text(data, "revision")
    resolution = resolve_model(model_name, revision or None)
    check.resolution = resolution
    for problem in resolution.errors:
        check.error("revision" if problem.code in ("invalid_revision", "revision_not_found") else "model_name", problem)
    check.warnings["model_name"] = list(resolution.warnings)
    if resolution.valid and (refusal := training_refusal(resolution)):
        check.error("model_name", refusal)

    output = validate_output_dir(data.get("output_directory", ""))
    for problem in output.errors:
        check.error("output_directory", problem)
    check.warnings["output_directory"] = list(output.warnings)

    dataset_path = data.get("dataset_path", "")
    located = check_dataset_path(dataset_path, dataset_roots())
    for problem in located.errors:
        check.error("dataset_path", problem)
    if located.valid:
        tokenizer = load_tokenizer(resolution) if (inspect_tokens and resolution.valid) else None
        report = inspect_dataset(located.path, tokenizer, hp.max_seq_length)
        check.dataset = report
        for problem in report.errors:
            check.error("dataset_path", problem)
        check.warnings["dataset_path"] = list(report.warnings)
    check.cleaned = {
        "name": name,
        "description": data.get("description") or "",
        "model_name": model_name,
        "revision": revision,
        "dataset_path": located.path or dataset_path,
        "dataset_format": check.dataset.format if check.dataset else "",
        "dataset_sha256": check.dataset.sha256 if check.dataset else "",
        "output_directory": output.path or data.get("output_directory", ""),
        "method": method,
        "hyperparameters": hp.to_dict(),
        "validation_prompt": data.get("validation_prompt") or "",
    }
    return check


def project_data(project: TrainingProject) -> dict[str, Any]:
    return {key: getattr(project, key) for key in EDITABLE}


def create_project(owner, data: dict[str, Any]) -> TrainingProject:
    check = check_project(data)
    if not check.valid:
        raise ProjectInvalid(check)
    return TrainingProject.objects.create(owner=owner, **check.cleaned)


def update_project(project: TrainingProject, changes: dict[str, Any]) -> ProjectCheck:
    """Apply a partial change to `project` (saved in place); the whole project is checked again, as a new one
    would be. Returns that check, whose dataset report callers can show without inspecting the file again."""
    merged = {**project_data(project), **{k: v for k, v in changes.items() if k in EDITABLE}}
    if isinstance(changes.get("hyperparameters"), dict):
        merged["hyperparameters"] = {**(project.hyperparameters or {}), **changes["hyperparameters"]}
    check = check_project(merged)
    live = project.runs.filter(status__in=LIVE_STATUSES).order_by("-id").first()
    if live is not None:
        for key in TRAINING_FIELDS:
            if check.cleaned.get(key) != getattr(project, key):
                check.error(
                    key,
                    Problem(
                        "run_in_progress",
                        f"Run {live.pk} of this project is {live.status}: '{key}' cannot change until it ends.",
                        "Wait for the run to end or cancel it, then save again. The name, description and validation "
                        "prompt can change now.",
                    ),
                )
    if not check.valid:
        raise ProjectInvalid(check)
    with transaction.atomic():
        for key, value in check.cleaned.items():
            setattr(project, key, value)
        project.save()
    return check
