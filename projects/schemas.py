"""Request and response bodies of the projects API (API v1's JSON contract for projects and runs).

The enumerations come from the models' choices, the hyperparameters' schema is their declaration
(projects.hyperparameters) and a run's JSON columns are their typed shapes (projects.runs.columns).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema

from models_registry.schemas import RESULT, NoNulls, StrictBody
from mtm.shared.problems import Problem
from mtm.shared.text import storable_or_refused
from projects.datasets.report import DatasetReport
from projects.hyperparameters import HYPERPARAMETERS, Hyperparameters
from projects.models import RunStage, RunStatus, TrainingMethod
from projects.runs.columns import EvalPoint, MetricPoint, RunProgress, RunSummary, ValidationReport
from projects.runs.compare import Difference
from projects.runs.config import RunConfig
from projects.runs.records import Artifact

RunStatusName = Literal[tuple(RunStatus.values)]
StageName = Literal[tuple(RunStage.values)]
MethodName = Literal[tuple(TrainingMethod.values)]

StoredText = Annotated[str, Field(max_length=10_000), AfterValidator(storable_or_refused)]
StoredPath = Annotated[str, Field(max_length=4096), AfterValidator(storable_or_refused)]
MaxSeqLength = Annotated[int, Field(ge=8, le=131_072)]
HYPERPARAMETERS_DOC = (
    'Only the ones to change from the defaults, e.g. {"max_steps": 100, "learning_rate": 0.0002}; '
    "the project's answer lists every value in use (their types and bounds are in the Hyperparameters schema)."
)
# The names are the declared ones; the values are checked by the project service, which accepts what the form
# sends too ("3", "on") and answers each bad one with a Problem naming it, so the schema does not type them.
HyperparametersIn = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                name: {"title": declared.label, **({"description": declared.help} if declared.help else {})}
                for name, declared in HYPERPARAMETERS.items()
            },
        }
    ),
]


EVAL_FILE_DOC = (
    "Optional: a separate eval set, checked as dataset_path is (an allowed dataset root or an upload's path). "
    "Eval loss is measured on its rows; refused together with the hyperparameter eval_fraction above 0 (choose "
    "one) and for the DPO objective."
)


class ProjectIn(StrictBody):
    name: StoredText
    description: StoredText = ""
    model_name: str = Field(description="A Hub repo id that resolves: in the HF cache or a model override.")
    revision: str | None = Field(None, description="A branch, tag or 40-character commit; blank or null for main.")
    dataset_path: StoredPath = Field(
        description="A file inside an allowed dataset root, or the dataset_path that POST /datasets returned."
    )
    eval_dataset_path: StoredPath = Field("", description=EVAL_FILE_DOC)
    output_directory: StoredPath = Field(description="An absolute path inside an allowed output root.")
    method: MethodName = "lora"
    hyperparameters: HyperparametersIn = Field(default_factory=dict, description=HYPERPARAMETERS_DOC)
    validation_prompt: StoredText = ""


class ProjectPatch(NoNulls):
    """Fields left out keep their values; hyperparameters sent are merged into the project's."""

    name: StoredText | None = None
    description: StoredText | None = None
    model_name: str | None = None
    revision: str | None = Field(None, description='Send "" to go back to main.')
    dataset_path: StoredPath | None = None
    eval_dataset_path: StoredPath | None = Field(None, description=EVAL_FILE_DOC + ' Send "" to remove it.')
    output_directory: StoredPath | None = None
    method: MethodName | None = None
    hyperparameters: HyperparametersIn | None = Field(None, description=HYPERPARAMETERS_DOC)
    validation_prompt: StoredText | None = None


class RunStartIn(StrictBody):
    resume: bool = Field(
        False, description="Continue from the latest complete checkpoint of the project's latest run, in a new run."
    )
    resume_from_run: int | None = Field(
        None,
        ge=1,
        le=2**63 - 1,
        description="Continue from this run's latest complete checkpoint (a run of the project).",
    )


class FieldProblemOut(Problem):
    field: str | None = Field(None, description="The request field the problem is about, when there is one.")


class ProjectErrorOut(Schema):
    detail: str
    errors: list[FieldProblemOut]


class RunErrorOut(Problem):
    # Every field is in every answer: the API schema says so (the hint too, "" when there is none).
    model_config = ConfigDict(from_attributes=True, json_schema_serialization_defaults_required=True)


class ResolvedModelOut(Schema):
    source: str | None
    path: str
    revision: str | None


class ArtifactOut(Artifact):
    model_config = RESULT


class RunOut(Schema):
    id: int
    project_id: int
    status: RunStatusName
    stage_failed: StageName | None
    error: RunErrorOut | None
    resolved_model: ResolvedModelOut | None
    device: str | None
    effective_batch: int = Field(
        description="Examples per optimizer step: devices × batch_size × gradient_accumulation_steps."
    )
    progress: RunProgress
    metrics: list[MetricPoint]
    eval_metrics: list[EvalPoint] = Field(description="Eval loss and perplexity at each evaluation (with an eval set).")
    validation: ValidationReport | None
    summary: RunSummary = Field(description="The trainer's final metrics, once training finished.")
    resume: bool
    resume_from_run: int | None = Field(description="The run whose checkpoint this one continued from.")
    resumed_from: str | None
    last_checkpoint: str | None
    run_folder: str | None = Field(
        description="The run's own folder, inside the project's output directory (output_directory holds the same)."
    )
    output_directory: str | None = Field(description="The run's own folder, inside the project's output directory.")
    artifacts: list[ArtifactOut]
    files_missing: bool = Field(description="True when the run succeeded but its output is no longer on disk.")
    config: RunConfig = Field(description="What the run trained with, copied from the project when it started.")
    cancel_requested: bool
    waiting: str | None = Field(
        None,
        description="While queued: what the run waits for and its place in line, naming the runs ahead and their owners.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    log_tail: str


class ProjectOut(Schema):
    id: int
    name: str
    owner: str
    description: str
    model_name: str
    revision: str | None
    dataset_path: str
    dataset_format: str | None
    eval_dataset_path: str | None = Field(description="The separate eval file; null without one.")
    eval_dataset_sha256: str | None
    output_directory: str
    method: MethodName
    hyperparameters: Hyperparameters
    validation_prompt: str
    created_at: datetime
    updated_at: datetime
    last_run: RunOut | None


class DatasetReportOut(DatasetReport):
    model_config = RESULT


class DatasetUploadOut(Schema):
    dataset_path: str = Field(description="Give this as dataset_path to POST /projects or PATCH /projects/{id}.")
    reused: bool = Field(
        False, description="True: you uploaded the same bytes before, and that first copy's path is answered."
    )
    report: DatasetReportOut


class ProjectDatasetOut(DatasetUploadOut):
    project: ProjectOut


class ComparedRunOut(Schema):
    id: int
    project_id: int
    project_name: str
    status: RunStatusName
    method: str
    model_name: str
    final_loss: float | None = Field(description="The last logged training loss.")
    eval_loss: float | None = Field(description="The eval set's loss at the last evaluation (null without one).")
    perplexity: float | None
    best_eval_step: int | None
    best_eval_loss: float | None
    result_step: int | None = Field(description="The step whose weights are the result (the best with keep_best_eval).")
    tokens_per_second: float | None = Field(description="Real (non-padding) training tokens per second.")
    duration_seconds: float | None
    summary: RunSummary
    validation: ValidationReport | None
    metrics: list[MetricPoint] = Field(description="Training loss points, for the overlaid curves.")
    eval_metrics: list[EvalPoint] = Field(description="Eval loss points (with an eval set).")


class DifferenceOut(Difference):
    model_config = RESULT


class ComparisonOut(Schema):
    runs: list[ComparedRunOut]
    differences: list[DifferenceOut] = Field(description="Only the settings that are not the same for every run.")
    same_settings: int
