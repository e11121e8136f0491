"""The SPEC a supervisor hands the trainer child (a JSON file), how to build one and how the child checks it.

```
{"model_path": "/abs/snapshot/dir",          resolved local folder of the base model (required)
 "model_shown": null | "/abs/published/dir", how messages and the manifest name the base model when model_path is
                                             a path to a folder the worker holds open
 "model_name": "org/name", "revision": "<commit>" | "",   for the manifest only
 "trust_remote_code": false,
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
 "hyperparameters": {...},                   projects.hyperparameters.Hyperparameters fields
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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtm.shared.problems import Problem
from projects.datasets.eval_split import eval_source_problems
from projects.datasets.row_size import DEFAULT_MAX_ROW_BYTES
from projects.hyperparameters import Hyperparameters
from projects.trainer.errors import TrainerError

METHODS = ("full", "lora")
DEVICES = ("auto", "cpu", "cuda")
LATEST = "latest"
DEFAULT_STAGING = ".staging-trainer"
DEFAULT_MAX_ROWS = 2_000_000  # MTM_DATASET_MAX_ROWS's default; the worker always writes its own setting


@dataclass(frozen=True)
class TrainerSpec:
    model_path: Path
    model_name: str
    revision: str
    trust_remote_code: bool
    dataset_path: Path
    output_dir: Path  # what messages, events and the manifest name
    write_dir: Path  # where files are written: "." (the folder the supervisor opened) or output_dir
    method: str
    hyperparameters: Hyperparameters
    resume_from_checkpoint: str | None
    cancel_file: Path | None
    device: str
    progress_interval: float
    hold_out_last_row: bool = False
    held_out_pairs: int = 0
    eval_dataset_path: Path | None = None
    staging_dir: str = DEFAULT_STAGING
    resume_shown: str | None = None
    model_shown: str | None = None
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
    max_rows: int = DEFAULT_MAX_ROWS

    @property
    def model_named(self) -> str:
        """The base model's folder as the member knows it (model_path may be a descriptor's path)."""
        return self.model_shown or str(self.model_path)


def build_spec(
    *,
    model_path: str | Path,
    model_name: str,
    dataset_path: str | Path,
    output_dir: str | Path,
    eval_dataset_path: str | Path | None = None,
    output_in_cwd: bool = False,
    method: str = "lora",
    hyperparameters: Hyperparameters | dict[str, Any] | None = None,
    revision: str = "",
    trust_remote_code: bool = False,
    resume_from_checkpoint: str | Path | None = None,
    cancel_file: str | Path | None = None,
    device: str = "auto",
    progress_interval: float = 1.0,
    hold_out_last_row: bool = False,
    held_out_pairs: int = 0,
    staging_dir: str = DEFAULT_STAGING,
    resume_shown: str | None = None,
    model_shown: str | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, Any]:
    """The SPEC dict for `python -m projects.trainer SPEC.json` (see write_spec). Checked by the child."""
    if isinstance(hyperparameters, Hyperparameters):
        hyperparameters = hyperparameters.to_dict()
    return {
        "model_path": str(model_path),
        "model_name": model_name,
        "revision": revision or "",
        "trust_remote_code": bool(trust_remote_code),
        "dataset_path": str(dataset_path),
        "eval_dataset_path": None if eval_dataset_path is None else str(eval_dataset_path),
        "output_dir": str(output_dir),
        "output_in_cwd": bool(output_in_cwd),
        "method": method,
        "hyperparameters": dict(hyperparameters or {}),
        "resume_from_checkpoint": None if resume_from_checkpoint is None else str(resume_from_checkpoint),
        "cancel_file": None if cancel_file is None else str(cancel_file),
        "device": device,
        "progress_interval": progress_interval,
        "hold_out_last_row": bool(hold_out_last_row),
        "held_out_pairs": int(held_out_pairs),
        "staging_dir": staging_dir,
        "resume_shown": resume_shown,
        "model_shown": model_shown,
        "max_row_bytes": int(max_row_bytes),
        "max_rows": int(max_rows),
    }


def parse_spec(data: Any) -> TrainerSpec:
    """Check a SPEC dict; raises TrainerError naming every problem found."""
    if not isinstance(data, dict):
        raise TrainerError("invalid_spec", "The trainer spec must be a JSON object.", _SPEC_HINT)
    problems: list[Problem] = []

    def text(key: str, required: bool = True) -> str:
        value = data.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            problems.append(Problem("invalid_spec", f"Spec field '{key}' must be a non-empty string.", _SPEC_HINT))
            return ""
        return value

    model_path = text("model_path")
    dataset_path = text("dataset_path")
    eval_dataset_path = text("eval_dataset_path", required=False)
    output_dir = text("output_dir")
    method = data.get("method", "lora")
    if method not in METHODS:
        problems.append(
            Problem(
                "invalid_spec",
                f"Unknown training method {method!r}.",
                "Set method to 'full' (every weight) or 'lora' (a low-rank adapter).",
            )
        )
    device = data.get("device", "auto")
    if device not in DEVICES:
        problems.append(Problem("invalid_spec", f"Unknown device {device!r}.", "Use 'auto', 'cpu' or 'cuda'."))
    hyperparameters, hp_problems = Hyperparameters.from_dict(data.get("hyperparameters") or {})
    problems.extend(hp_problems)
    problems.extend(eval_source_problems(hyperparameters.objective, hyperparameters.eval_fraction, eval_dataset_path))
    interval = data.get("progress_interval", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval <= 3600:
        problems.append(
            Problem("invalid_spec", f"progress_interval {interval!r} is not a number of seconds.", "Use e.g. 1.0.")
        )
        interval = 1.0
    resume = data.get("resume_from_checkpoint")
    if resume is not None and (not isinstance(resume, str) or not resume.strip()):
        problems.append(
            Problem(
                "invalid_spec",
                f"resume_from_checkpoint {resume!r} is neither null, 'latest' nor a checkpoint path.",
                _SPEC_HINT,
            )
        )
        resume = None
    held_out = data.get("held_out_pairs", 0)
    if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 0:
        problems.append(Problem("invalid_spec", f"held_out_pairs {held_out!r} is not a count of pairs.", _SPEC_HINT))
        held_out = 0
    max_row_bytes = data.get("max_row_bytes", DEFAULT_MAX_ROW_BYTES)
    if isinstance(max_row_bytes, bool) or not isinstance(max_row_bytes, int) or max_row_bytes < 1:
        problems.append(
            Problem("invalid_spec", f"max_row_bytes {max_row_bytes!r} is not a number of bytes.", _SPEC_HINT)
        )
        max_row_bytes = DEFAULT_MAX_ROW_BYTES
    max_rows = data.get("max_rows", DEFAULT_MAX_ROWS)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        problems.append(Problem("invalid_spec", f"max_rows {max_rows!r} is not a count of rows.", _SPEC_HINT))
        max_rows = DEFAULT_MAX_ROWS
    cancel_file = text("cancel_file", required=False)
    staging = data.get("staging_dir", DEFAULT_STAGING)
    if not isinstance(staging, str) or not staging.startswith(".staging-") or "/" in staging or "\0" in staging:
        problems.append(Problem("invalid_spec", f"staging_dir {staging!r} is not a folder name.", _SPEC_HINT))
        staging = DEFAULT_STAGING
    model_shown = data["model_shown"] if isinstance(data.get("model_shown"), str) else None
    if model_path and not Path(model_path).is_dir():
        name = data.get("model_name") or model_path
        problems.append(
            Problem(
                "model_not_found",
                f"Model '{name}' not found: its folder {model_shown or model_path} does not exist (any more).",
                "Resolve the model again (it may have been deleted from the cache) and start a new run.",
            )
        )
    if dataset_path and not Path(dataset_path).is_file():
        problems.append(
            Problem(
                "dataset_not_found",
                f"Dataset file {dataset_path} does not exist (any more).",
                "Upload the dataset again or point the project at an existing file, then start a new run.",
            )
        )
    if eval_dataset_path and not Path(eval_dataset_path).is_file():
        problems.append(
            Problem(
                "dataset_not_found",
                f"Eval file {eval_dataset_path} does not exist (any more).",
                "Point the project's eval file at an existing file (or clear it), then start a new run.",
            )
        )
    if output_dir and not Path(output_dir).is_absolute():
        problems.append(
            Problem("invalid_spec", f"Output directory {output_dir!r} is not an absolute path.", _SPEC_HINT)
        )
    if problems:
        raise TrainerError.from_problems(problems)
    return TrainerSpec(
        model_path=Path(model_path),
        model_name=str(data.get("model_name") or model_path),
        revision=str(data.get("revision") or ""),
        trust_remote_code=data.get("trust_remote_code") is True,
        dataset_path=Path(dataset_path),
        output_dir=Path(output_dir),
        write_dir=Path(".") if data.get("output_in_cwd") is True else Path(output_dir),
        method=method,
        hyperparameters=hyperparameters,
        resume_from_checkpoint=resume,
        cancel_file=Path(cancel_file) if cancel_file else None,
        device=device,
        progress_interval=float(interval),
        hold_out_last_row=data.get("hold_out_last_row") is True,
        held_out_pairs=held_out,
        eval_dataset_path=Path(eval_dataset_path) if eval_dataset_path else None,
        staging_dir=staging,
        resume_shown=data["resume_shown"] if isinstance(data.get("resume_shown"), str) else None,
        model_shown=model_shown,
        max_row_bytes=max_row_bytes,
        max_rows=max_rows,
    )


_SPEC_HINT = "The spec is written by the portal; build it with projects.trainer.spec.build_spec."
