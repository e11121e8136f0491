"""Creating, changing and deleting projects: the one way in for the page, the API and the admin.

Every field is checked with the same code the page, the API and the worker use; a project whose model, output
directory or dataset does not validate is refused with the resolver's and the validators' own Problem objects,
keyed by the field they belong to. Each change is locked against a run starting and audited here, the same
whatever the channel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from models_registry.deep_state import overruled_by_cache
from models_registry.lookup import dataset_roots, resolve_model
from models_registry.resolution import Resolution
from models_registry.template_sandbox import TEMPLATE_LIMIT_CODES
from models_registry.trainability import training_refusal
from mtm import audit
from mtm.audit import Actor
from mtm.shared.claims import identity_of
from mtm.shared.problems import Problem
from projects.datasets import DatasetPathCheck, DatasetReport, check_dataset_path
from projects.datasets.chat_templates import with_chat_template
from projects.datasets.eval_split import NO_EVAL_SET_TO_KEEP_BEST_BY, eval_file_warnings, eval_source_problems
from projects.datasets.pairs import objective_problem
from projects.datasets.report import read_dataset
from projects.datasets.template_check import chat_template_problems, renders_chat_template
from projects.datasets.token_stats import apply_count, request_count, template_key
from projects.datasets.uploads import upload_problems
from projects.hyperparameters import HYPERPARAMETERS, Hyperparameters
from projects.lora_targets import lora_target_problems
from projects.models import LIVE_STATUSES, TokenCount, TrainingMethod, TrainingProject, TrainingRun
from projects.ownership import checked_output_dir, lock_claims, output_dir_conflicts
from projects.runs.scheduling.fit import held_elsewhere

EDITABLE = (
    "name",
    "description",
    "model_name",
    "revision",
    "dataset_path",
    "eval_dataset_path",
    "output_directory",
    "method",
    "hyperparameters",
    "validation_prompt",
)
NAME_MAX = 120
# What a queued or running run reads from the project: frozen while one is live.
TRAINING_FIELDS = tuple(name for name in EDITABLE if name not in ("name", "description", "validation_prompt"))


@dataclass
class ProjectCheck:
    errors: dict[str, list[Problem]] = field(default_factory=dict)
    warnings: dict[str, list[Problem]] = field(default_factory=dict)
    resolution: Resolution | None = None
    dataset: DatasetReport | None = None
    eval_dataset: DatasetReport | None = None
    hyperparameters: Hyperparameters | None = None
    cleaned: dict[str, Any] = field(default_factory=dict)
    # The token counts of the dataset and the eval file, by field: done, or pending on a worker.
    counts: dict[str, TokenCount] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(self.errors.values())

    def error(self, name: str, problem: Problem) -> None:
        self.errors.setdefault(name, []).append(problem)

    def all_errors(self) -> list[Problem]:
        return [p for problems in self.errors.values() for p in problems]


class ProjectInvalid(Exception):
    def __init__(self, check: ProjectCheck):
        super().__init__("; ".join(p.message for p in check.all_errors()))
        self.check = check


class ProjectBusy(Exception):
    """A change refused because a run of the project is live (it goes away once the run ends)."""

    def __init__(self, problem: Problem, run: TrainingRun):
        super().__init__(problem.message)
        self.problem = problem
        self.run = run


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


def check_project(
    data: dict[str, Any], *, inspect_tokens: bool = True, user: Any = None, project: TrainingProject | None = None
) -> ProjectCheck:
    """Check a project's fields (a complete set, as from the form or the API after defaults are applied), for
    `user` saving `project` (None: a new one). Without a user, nothing of anyone's counts as theirs.

    The dataset and the eval file get the bounded read of a request (format, rows, first rows). Their token
    lengths, and the warnings and refusals that come from them, are a worker's count (token_stats.py) of the same
    part read: taken when it is done (the form's check usually asked for it), else asked for (`inspect_tokens`)
    and "pending" on the report. Meanwhile a chat template is rendered over the first rows here, in its limited
    child, so a template that cannot work is refused before any run is queued."""
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
    objective_refused = any(problem.field == "objective" for problem in problems)
    for problem in problems:
        # A DPO-only setting an SFT project never uses does not block it: a wrong one is stored as its default
        # (from_dict already put the default in its place), a valid one is kept for a later switch to DPO.
        declared = HYPERPARAMETERS.get(problem.field or "")
        if declared is not None and not objective_refused and not declared.applies("lora", hp.objective):
            continue
        check.error("hyperparameters", problem)
    check.hyperparameters = hp

    model_name, revision = data.get("model_name", ""), _text(data, "revision")
    resolution = overruled_by_cache(resolve_model(model_name, revision or None))
    check.resolution = resolution
    check.warnings["model_name"] = list(resolution.warnings)
    if on_workers := held_elsewhere(model_name, resolution):
        check.warnings["model_name"].append(on_workers)  # several hosts: the web host need not hold the model
    else:
        for problem in resolution.errors:
            field = "revision" if problem.code in ("invalid_revision", "revision_not_found") else "model_name"
            check.error(field, problem)
    if resolution.valid and (refusal := training_refusal(resolution)):
        check.error("model_name", refusal)
    if method == TrainingMethod.LORA and resolution.valid and not on_workers:
        for problem in lora_target_problems(resolution.path, resolution.revision, hp.lora_target_modules, model_name):
            check.error("hyperparameters", problem)

    output = checked_output_dir(data.get("output_directory", ""), user, project)
    for problem in output.errors:
        check.error("output_directory", problem)
    check.warnings["output_directory"] = list(output.warnings)

    @functools.cache  # loaded once, for the first dataset file whose rows go through the chat template
    def tokenizer() -> Any:
        loaded = load_tokenizer(resolution) if (inspect_tokens and resolution.valid) else None
        return with_chat_template(loaded, hp.chat_template)

    def counted(read: Any, path: str) -> TokenCount | None:
        if not (inspect_tokens and resolution.valid):
            return None
        return request_count(
            read,
            path,
            user,
            resolution,
            model_name=model_name,
            revision=revision,
            max_seq_length=hp.max_seq_length,
            max_prompt_length=hp.max_prompt_length,
            chat_template=template_key(hp.chat_template),
        )

    def dataset_file(field: str, path: str) -> tuple[DatasetPathCheck, DatasetReport | None]:
        """The dataset and the eval file are checked alike: where the file is, whose upload, its rows and fields;
        each problem under `field`."""
        located = check_dataset_path(path, dataset_roots())
        for problem in located.errors or upload_problems(located, user, project, field):
            check.error(field, problem)
        if check.errors.get(field):
            return located, None
        read = read_dataset(located.path)
        report = read.report
        count = counted(read, located.path)
        apply_count(report, count)
        if count is not None:
            check.counts[field] = count
        if (count is None or count.state != TokenCount.State.DONE) and renders_chat_template(report.format, read.rows):
            report.errors.extend(chat_template_problems(report.format, read.rows, tokenizer(), model=f"'{model_name}'"))
        if report.valid and (mismatch := objective_problem(hp.objective, report.format, located.path or "")):
            report.errors.append(mismatch)
        for problem in report.errors:
            # A chat template past its limits is the model's problem, whatever the dataset holds.
            if problem.code not in TEMPLATE_LIMIT_CODES:
                check.error(field, problem)
            elif problem not in check.errors.get("model_name", []):
                check.error("model_name", problem)
        check.warnings[field] = list(report.warnings)
        return located, report

    dataset_path = data.get("dataset_path", "")
    located, check.dataset = dataset_file("dataset_path", dataset_path)
    eval_path = _text(data, "eval_dataset_path")
    eval_located = None
    if source_problems := eval_source_problems(hp.objective, hp.eval_fraction, eval_path):
        for problem in source_problems:
            check.error("eval_dataset_path", problem)
    elif eval_path:
        eval_located, check.eval_dataset = dataset_file("eval_dataset_path", eval_path)
        doubts = eval_file_warnings(located.path, check.dataset, eval_located.path, check.eval_dataset)
        check.warnings.setdefault("eval_dataset_path", []).extend(doubts)
        if check.eval_dataset is not None:  # shown with the eval file's report on the form
            check.eval_dataset.warnings.extend(doubts)
    if hp.keep_best_eval and not eval_path and hp.eval_fraction <= 0:
        check.error("hyperparameters", NO_EVAL_SET_TO_KEEP_BEST_BY)
    check.cleaned = {
        "name": name,
        "description": data.get("description") or "",
        "model_name": model_name,
        "revision": revision,
        "dataset_path": located.path or dataset_path,
        "dataset_format": check.dataset.format if check.dataset else "",
        "dataset_sha256": (check.dataset.sha256 if check.dataset else "") or "",
        "eval_dataset_path": (eval_located.path if eval_located else None) or eval_path,
        "eval_dataset_sha256": (check.eval_dataset.sha256 if check.eval_dataset else "") or "",
        "output_directory": output.path or data.get("output_directory", ""),
        "method": method,
        "hyperparameters": hp.to_dict(),
        # A browser's text box sends CRLF line breaks; the API sends LF: the same prompt is stored the same way.
        "validation_prompt": (data.get("validation_prompt") or "").replace("\r\n", "\n"),
    }
    return check


def project_data(project: TrainingProject) -> dict[str, Any]:
    return {key: getattr(project, key) for key in EDITABLE}


def _locked(project: TrainingProject) -> TrainingRun | None:
    """Lock the project's row (start_run takes the same lock) and return its live run, if any."""
    TrainingProject.objects.select_for_update().filter(pk=project.pk).first()
    return project.runs.filter(status__in=LIVE_STATUSES).order_by("-created_at", "-id").first()


def create_project(data: dict[str, Any], *, actor: Actor) -> TrainingProject:
    """Create a project owned by the actor; refused (ProjectInvalid) unless every field validates."""
    check = check_project(data, user=actor.user)
    if not check.valid:
        raise ProjectInvalid(check)
    with transaction.atomic():
        _recheck_claims(check, actor.user, None)
        if not check.valid:
            raise ProjectInvalid(check)
        project = TrainingProject.objects.create(
            owner=actor.user, **check.cleaned, output_dir_identity=identity_of(check.cleaned["output_directory"])
        )
        audit.record_change(actor, "project.create", project, {k: [None, v] for k, v in project_data(project).items()})
    return project


def update_project(project: TrainingProject, changes: dict[str, Any], *, actor: Actor) -> ProjectCheck:
    """Apply a partial change to `project` (saved in place); the whole project is checked again, as a new one
    would be. Returns that check, whose dataset report callers can show without inspecting the file again.
    The audit record lists every field that changed; nothing is recorded when nothing did."""
    merged = {**project_data(project), **{k: v for k, v in changes.items() if k in EDITABLE}}
    if isinstance(changes.get("hyperparameters"), dict):
        merged["hyperparameters"] = {**(project.hyperparameters or {}), **changes["hyperparameters"]}
    check = check_project(merged, user=actor.user, project=project)  # the slow part, before the lock
    with transaction.atomic():
        live = _locked(project)
        _recheck_claims(check, actor.user, project)
        if live is not None:
            for key in TRAINING_FIELDS:
                if check.cleaned.get(key) != getattr(project, key):
                    check.error(key, _frozen_while_live(key, live))
        if not check.valid:
            raise ProjectInvalid(check)
        before = project_data(project)
        for key, value in check.cleaned.items():
            setattr(project, key, value)
        project.output_dir_identity = identity_of(project.output_directory)
        project.save()
        if found := audit.diff(before, project_data(project)):
            audit.record_change(actor, "project.update", project, found)
    return check


def _recheck_claims(check: ProjectCheck, user: Any, project: TrainingProject | None) -> None:
    """The output directory's ownership checked again under the claims lock, right before the save: another
    project may have claimed the folder since check_project ran."""
    lock_claims()
    if check.errors.get("output_directory"):
        return
    for problem in output_dir_conflicts(check.cleaned["output_directory"], user, project, adopt=True):
        check.error("output_directory", problem)


def _frozen_while_live(key: str, live: TrainingRun) -> Problem:
    return Problem(
        "run_in_progress",
        f"Run {live.pk} of this project is {live.status}: '{key}' cannot change until it ends.",
        "Wait for the run to end or cancel it, then save again. The name, description and validation "
        "prompt can change now.",
    )


def delete_project(project: TrainingProject, *, actor: Actor) -> None:
    """Delete the project and its runs' records (never its output directory); refused while a run is live."""
    with transaction.atomic():
        live = _locked(project)
        if live is not None:
            raise ProjectBusy(
                Problem(
                    "project_has_live_run",
                    f"Project '{project.name}' cannot be deleted: its run {live.pk} is {live.status}.",
                    "Cancel the run first and delete the project once it has ended.",
                ),
                live,
            )
        audit.record_change(actor, "project.delete", project, {k: [v, None] for k, v in project_data(project).items()})
        project.delete()
