"""The SPEC a supervisor hands the trainer child: one pydantic model, written as a JSON file (`write_spec`) and
read back by the child (`read_spec`), which names every problem it finds.

```
{"model_name": "org/name", "revision": "<commit>" | "",   for the manifest only
 "model_shown": null | "/abs/resolved/dir",  how messages and the manifest name the base model when model_path is
                                             a path to a folder the worker holds open
 "model_path": "/proc/<pid>/fd/<n>",         the base model's folder as the worker holds it, or its resolved local
                                             folder (required; projects.runs.base_model_folder)
 "trust_remote_code": false,
 "hyperparameters": {...},                   projects.hyperparameters.Hyperparameters fields
 "dataset_path": "/abs/data.jsonl",          (required)
 "eval_dataset_path": null | "/abs/eval.jsonl",   a separate eval set: its rows are evaluated, the dataset's
                                             all train (never with eval_fraction above 0, nor for DPO)
 "output_dir": "/abs/output",                (required; created when missing)
 "output_in_cwd": false,                     true: the child starts in the opened output folder and writes
                                             only there, relative to ".", never through the path again
 "staging_dir": ".staging-<hex>",            a private (0700) folder inside the output folder where the
                                             libraries save by path; each checkpoint and the final model are
                                             checked and renamed into place from there (default ".staging-trainer")
 "method": "full" | "lora",
 "resume_from_checkpoint": null | "latest" | "/abs/output/checkpoint-N",
 "resume_shown": null | "/abs/output/checkpoint-N",   how events and the manifest name the checkpoint when
                                             resume_from_checkpoint is a path to a folder the worker holds open
 "cancel_file": null | "/abs/path",          its appearance asks the child to stop, save and exit 3
 "hold_out_last_row": false,                 true: the dataset's last row is not trained on (a validation prompt)
 "held_out_pairs": 0,                        DPO: the dataset's last N pairs are not trained on (the preference check)
 "device": "auto" | "cpu" | "cuda",
 "max_row_bytes": 1048576,                   a dataset row longer than this in its file fails the run, named, before
                                             anything is tokenized (the worker's MTM_DATASET_MAX_ROW_BYTES)
 "max_rows": 2000000,                        a dataset or eval file of more rows fails the run, named, before a row
                                             is parsed (the worker's MTM_DATASET_MAX_ROWS)
 "progress_interval": 1.0}                   seconds between progress events (logging steps add more)
```
The fields are validated in this order, so a check can name the fields before it (a missing model folder is named
by model_name and model_shown). Only the child checks that the files and folders exist (`read_spec`): the paths are
the ones it will open, and the world may have changed since the supervisor wrote them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from mtm.shared.problems import Problem
from projects.datasets.eval_split import eval_source_problems
from projects.datasets.row_size import DEFAULT_MAX_ROW_BYTES
from projects.hyperparameters import Hyperparameters
from projects.trainer.errors import TrainerError

LATEST = "latest"
DEFAULT_STAGING = ".staging-trainer"
DEFAULT_MAX_ROWS = 2_000_000  # MTM_DATASET_MAX_ROWS's default; the worker always writes its own setting
SPEC_HINT = (
    "The spec is written by the portal; build it as a projects.trainer.spec.TrainerSpec and write it with write_spec."
)
# The validation context under which the paths must exist on this machine (the child's reading).
ON_DISK = {"check_paths": True}
_WORLD_CODES = ("model_not_found", "dataset_not_found")  # what changed on disk, not in the spec


def _non_empty_path(value: Any) -> Any:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise ValueError("not a non-empty path")
    return value


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError("not absolute")
    return path


def _non_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("blank")
    return value


RequiredPath = Annotated[Path, BeforeValidator(_non_empty_path)]
OptionalPath = Annotated[Path | None, BeforeValidator(lambda v: v if v is None else _non_empty_path(v))]


def _problem_error(problems: list[Problem]) -> PydanticCustomError:
    """A validation error carrying Problems whole (code, every message, every hint), read back by `spec_problems`."""
    joined = TrainerError.from_problems(problems)
    return PydanticCustomError(
        "mtm_problem", "{message}", {"message": joined.message, "code": joined.code, "hint": joined.hint}
    )


def _checking_paths(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("check_paths"))


class TrainerSpec(BaseModel):
    """What one training run trains, from what, into where. Built by the supervisor, read by the child."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model_name: str = Field(strict=True, min_length=1, description="a model name (e.g. 'org/name')")
    revision: str = Field("", strict=True, description="a revision (a commit, or empty)")
    model_shown: str | None = Field(None, strict=True, description="a folder name (or null)")
    model_path: RequiredPath = Field(description="a non-empty path to the base model's folder")
    trust_remote_code: bool = Field(False, strict=True, description="true or false")
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="an object of hyperparameters"
    )
    dataset_path: RequiredPath = Field(description="a non-empty path to the dataset file")
    eval_dataset_path: OptionalPath = Field(None, description="a path to the eval file (or null)")
    output_dir: Annotated[RequiredPath, AfterValidator(_absolute)] = Field(description="an absolute path")
    output_in_cwd: bool = Field(False, strict=True, description="true or false")
    staging_dir: str = Field(
        DEFAULT_STAGING, strict=True, pattern=r"^\.staging-[^/\x00]*$", description="a folder name '.staging-...'"
    )
    method: Literal["full", "lora"] = Field(
        "lora", description="a training method: 'full' (every weight) or 'lora' (a low-rank adapter)"
    )
    resume_from_checkpoint: Annotated[str | None, AfterValidator(_non_blank)] = Field(
        None, strict=True, description=f"null, '{LATEST}' or a checkpoint path"
    )
    resume_shown: str | None = Field(None, strict=True, description="a checkpoint name (or null)")
    cancel_file: OptionalPath = Field(None, description="a path to the cancel file (or null)")
    hold_out_last_row: bool = Field(False, strict=True, description="true or false")
    held_out_pairs: int = Field(0, strict=True, ge=0, description="a count of pairs")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="a device: 'auto', 'cpu' or 'cuda'")
    max_row_bytes: int = Field(DEFAULT_MAX_ROW_BYTES, strict=True, ge=1, description="a number of bytes")
    max_rows: int = Field(DEFAULT_MAX_ROWS, strict=True, ge=1, description="a count of rows")
    progress_interval: float = Field(1.0, strict=True, ge=0, le=3600, description="a number of seconds (0 to 3600)")

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _checked_hyperparameters(cls, value: Any) -> Hyperparameters:
        """Every check the project form makes, cross-field ones too, each with its message."""
        if isinstance(value, Hyperparameters):
            value = value.to_dict()
        checked, problems = Hyperparameters.from_dict(value)
        if problems:
            raise _problem_error(problems)
        return checked

    @field_validator("model_path")
    @classmethod
    def _model_folder_exists(cls, path: Path, info: ValidationInfo) -> Path:
        if _checking_paths(info) and not path.is_dir():
            name = info.data.get("model_name") or path
            shown = info.data.get("model_shown") or path
            raise _problem_error(
                [
                    Problem(
                        "model_not_found",
                        f"Model '{name}' not found: its folder {shown} does not exist (any more).",
                        "Resolve the model again (it may have been deleted from the cache) and start a new run.",
                    )
                ]
            )
        return path

    @field_validator("dataset_path")
    @classmethod
    def _dataset_exists(cls, path: Path, info: ValidationInfo) -> Path:
        if _checking_paths(info):
            _must_exist(
                path,
                "Dataset file",
                "Upload the dataset again or point the project at an existing file, then start a new run.",
            )
        return path

    @field_validator("eval_dataset_path")
    @classmethod
    def _eval_file_fits(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return path
        hyperparameters = info.data.get("hyperparameters")
        if isinstance(hyperparameters, Hyperparameters):
            conflicts = eval_source_problems(hyperparameters.objective, hyperparameters.eval_fraction, str(path))
            if conflicts:
                raise _problem_error(conflicts)
        if _checking_paths(info):
            _must_exist(
                path,
                "Eval file",
                "Point the project's eval file at an existing file (or clear it), then start a new run.",
            )
        return path

    @property
    def write_dir(self) -> Path:
        """Where files are written: "." (the folder the supervisor opened) or output_dir."""
        return Path(".") if self.output_in_cwd else self.output_dir

    @property
    def model_named(self) -> str:
        """The base model's folder as the member knows it (model_path may be a descriptor's path)."""
        return self.model_shown or str(self.model_path)


def write_spec(spec: TrainerSpec, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.model_dump_json(indent=2))
    return path


def read_spec(path: Path) -> TrainerSpec:
    """The spec in the file at `path`, its paths checked on this machine; TrainerError naming every problem."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise TrainerError("invalid_spec", f"Cannot read the trainer spec {path}: {exc.strerror}.", SPEC_HINT) from None
    try:
        return TrainerSpec.model_validate_json(text, context=ON_DISK)
    except ValidationError as invalid:
        problem = spec_problem(invalid, f"The trainer spec {path}")
        raise TrainerError(problem.code, problem.message, problem.hint) from None


def _must_exist(path: Path, what: str, hint: str) -> None:
    if not path.is_file():
        raise _problem_error([Problem("dataset_not_found", f"{what} {path} does not exist (any more).", hint)])


def spec_problem(invalid: ValidationError, source: str = "The trainer spec") -> Problem:
    """Every fault of a spec in one Problem: the first one's code, every message, every distinct hint."""
    faults = sorted(_faults(invalid, source), key=lambda p: p.code in _WORLD_CODES)  # the spec's own faults first
    joined = TrainerError.from_problems(faults)
    return Problem(joined.code, joined.message, joined.hint)


def _faults(invalid: ValidationError, source: str = "The trainer spec") -> list[Problem]:
    """One Problem per fault of a spec, naming the field, its value and what it must be."""
    problems = []
    for error in invalid.errors():
        ctx = error.get("ctx") or {}
        if error["type"] == "mtm_problem":
            problems.append(Problem(ctx["code"], ctx["message"], ctx["hint"]))
            continue
        loc = error["loc"]
        name = ".".join(str(part) for part in loc)
        if error["type"] == "json_invalid":
            message = f"{source} is not valid JSON: {ctx.get('error', error['msg'])}."
        elif not loc:
            message = f"{source} must be a JSON object of field: value, not {type(error['input']).__name__}."
        elif error["type"] == "missing":
            message = f"Spec field '{name}' is missing."
        elif error["type"] == "extra_forbidden":
            message = f"Spec field '{name}' is not a field of the trainer spec."
        else:
            field = TrainerSpec.model_fields.get(str(loc[0]))
            what = field.description if field is not None and field.description else str(error["msg"]).lower()
            message = f"{name} {error['input']!r} is not {what}."
        problems.append(Problem("invalid_spec", message, SPEC_HINT))
    return problems
