"""What a run trains with: the project's settings copied onto the run at Start, so that editing the project later
never changes what a run did or what its page shows.

The copy is a typed JSON column (`TrainingRun.config`), written by the Start service and read by the worker's
stages and the pages. A row that predates the column (or was made by hand) has no copy: it reads the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from projects.hyperparameters import HYPERPARAMETERS, Hyperparameters
from projects.models import TrainingMethod, TrainingProject, TrainingRun


def _text(value: Any) -> str:
    return "" if value is None else str(value)


Text = Annotated[str, BeforeValidator(_text)]


class RunConfig(BaseModel):
    """The settings a run was started with. `revision` is the one asked for ("" for main); the revision and folder
    it resolved to are on the run (resolved_revision, resolved_path). `dataset_sha256` (and `eval_dataset_sha256`)
    is the digest of the file the trainer read once it has been snapshotted (the project's digest until then)."""

    model_name: Text = ""
    revision: Text = ""
    method: Text = TrainingMethod.LORA.value
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    dataset_path: Text = ""
    dataset_sha256: Text = ""
    # A separate eval set ("": none); its digest is the snapshot's the trainer read, like the dataset's.
    eval_dataset_path: Text = ""
    eval_dataset_sha256: Text = ""
    output_directory: Text = Field("", description="The project's output directory the run's folder is in.")
    validation_prompt: Text = ""
    # Facts the worker adds: the dataset's row count (at resolve) and whether its last row was held out of
    # training to be the validation prompt (at train).
    dataset_rows: int | None = None
    eval_dataset_rows: int | None = None  # the eval file's row count (at resolve)
    held_out_row: bool = False
    # DPO: the pairs at the dataset's end kept out of training for the preference check (at train).
    held_out_pairs: int = 0

    @classmethod
    def of_project(cls, project: TrainingProject) -> RunConfig:
        return cls(
            model_name=project.model_name,
            revision=project.revision,
            method=project.method,
            # Every value as stored, over the defaults: a value the trainer refuses fails the run, as it would
            # have, instead of being quietly replaced by its default.
            hyperparameters={**Hyperparameters().to_dict(), **dict(project.hyperparameters or {})},
            dataset_path=project.dataset_path,
            dataset_sha256=project.dataset_sha256,
            eval_dataset_path=project.eval_dataset_path,
            eval_dataset_sha256=project.eval_dataset_sha256,
            output_directory=project.output_directory,
            validation_prompt=project.validation_prompt,
        )

    @classmethod
    def read(cls, stored: Any) -> RunConfig | None:
        if not isinstance(stored, dict) or not stored.get("model_name"):
            return None
        return cls.model_validate(stored)

    @property
    def values(self) -> Hyperparameters:
        return Hyperparameters.from_stored(self.hyperparameters)

    @property
    def method_label(self) -> str:
        return TrainingMethod(self.method).label if self.method in TrainingMethod.values else self.method


def run_config(run: TrainingRun) -> RunConfig:
    """The run's own settings; the project's for a row that has none stored."""
    return RunConfig.read(run.config) or RunConfig.of_project(run.project)


def shown_value(name: str, value: Any) -> str:
    declared = HYPERPARAMETERS[name]
    if declared.zero_means and value == 0 and not isinstance(value, bool):
        return f"0 ({declared.zero_means})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def hyperparameter_rows(values: dict[str, Any], method: str) -> list[tuple[str, str, str]]:
    """(name, label, shown value) for every hyperparameter that applies to `method` and the values' objective."""
    rows = []
    objective = values.get("objective", "sft")
    for name, declared in HYPERPARAMETERS.items():
        if not declared.applies(method, objective):
            continue
        rows.append((name, declared.label, shown_value(name, values[name])))
    return rows


@dataclass(frozen=True)
class ConfigRow:
    key: str
    label: str
    value: str
    long: bool = False  # shown as a block that keeps its line breaks (the validation prompt)


def config_rows(run: TrainingRun, config: RunConfig | None = None) -> list[ConfigRow]:
    """Everything the run trained with, in the order the Configuration panel shows it."""
    config = config or run_config(run)
    rows = [
        ConfigRow("model_name", "Base model", config.model_name),
        ConfigRow("revision", "Revision asked for", config.revision or "main (default)"),
        ConfigRow("resolved_revision", "Resolved revision", run.resolved_revision or "—"),
        ConfigRow("resolved_path", "Resolved folder", run.resolved_path or "—"),
        ConfigRow("method", "Method", config.method_label),
        ConfigRow("dataset_path", "Dataset", config.dataset_path),
        ConfigRow("dataset_sha256", "Dataset sha256", config.dataset_sha256 or "—"),
        ConfigRow("eval_dataset_path", "Eval file", config.eval_dataset_path or "none"),
        ConfigRow("eval_dataset_sha256", "Eval file sha256", config.eval_dataset_sha256 or "—"),
        ConfigRow(
            "validation_prompt",
            "Validation prompt",
            config.validation_prompt
            or (
                "(none: the dataset's last row, held out of training)"
                if config.held_out_row
                else "(none: a prompt from the dataset)"
            ),
            long=bool(config.validation_prompt),
        ),
    ]
    values = {**Hyperparameters().to_dict(), **config.hyperparameters}
    for name, label, value in hyperparameter_rows(values, config.method):
        if name == "preference_pairs" and config.held_out_pairs and str(value) != str(config.held_out_pairs):
            value = f"{value} (held out: {config.held_out_pairs}, at most a fifth of the file)"  # capped by its size
        rows.append(ConfigRow(name, label, value))
    return rows


@dataclass(frozen=True)
class Change:
    label: str
    before: str
    after: str


def previous_run(run: TrainingRun) -> TrainingRun | None:
    """The project's run started just before this one."""
    return (
        TrainingRun.objects.filter(project_id=run.project_id, pk__lt=run.pk)
        .select_related("project")
        .order_by("-pk")
        .first()
    )


def changes_since(run: TrainingRun, before: TrainingRun) -> list[Change]:
    """Only the settings that differ between `before` and `run`. The resolved folder is left out: it differs
    whenever the revision does."""
    old = {row.key: row for row in config_rows(before)}
    changed = []
    for row in config_rows(run):
        if row.key == "resolved_path":
            continue
        was = old.get(row.key)
        if was is None:
            changed.append(Change(row.label, "(does not apply)", row.value))
        elif was.value != row.value:
            changed.append(Change(row.label, was.value, row.value))
    return changed
