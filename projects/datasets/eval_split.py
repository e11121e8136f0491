"""The eval set of a run: a seeded share of the dataset's rows, held out of training, or a separate eval file.

The two sources exclude each other (`eval_source_problems`): a run evaluates on one set, named on its page. With a
separate file every row of the dataset trains and every row of the file is evaluated. With a share, the trainer (to train on the rest and measure eval loss) and the validation stage (to ask the base and the
fine-tuned model the same held-out prompts) call `eval_indices` with the same count, share and seed, so both see
the same rows without the list being passed around. Plain Python: no Django, no torch.
"""

from __future__ import annotations

import os
import random
from typing import Any

from mtm.shared.problems import Problem

EVAL_FILE_FIELD = "eval_dataset_path"
NO_EVAL_SET = "none (no eval file, eval fraction 0)"
MIN_TRAIN_ROWS = 1  # a split never leaves training with nothing


def eval_size(count: int, fraction: float) -> int:
    """How many of `count` rows the eval set takes: at least one when there is a share at all, and never so many
    that no row is left to train on."""
    if fraction <= 0 or count <= MIN_TRAIN_ROWS:
        return 0
    return max(1, min(count - MIN_TRAIN_ROWS, round(count * fraction)))


def eval_indices(count: int, fraction: float, seed: int) -> list[int]:
    """The row numbers (0-based, ascending) of the eval set among `count` rows; the same for the same arguments."""
    size = eval_size(count, fraction)
    if size == 0:
        return []
    return sorted(random.Random(f"mtm-eval-split:{seed}").sample(range(count), size))


def split_rows(rows: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(training rows, eval rows), each in the dataset's order."""
    picked = set(eval_indices(len(rows), fraction, seed))
    return [row for i, row in enumerate(rows) if i not in picked], [row for i, row in enumerate(rows) if i in picked]


def describe_split(count: int | None, fraction: float, seed: int) -> str:
    """What the run page says about the eval set."""
    if fraction <= 0:
        return NO_EVAL_SET
    share = f"{fraction:.0%}" if (fraction * 100).is_integer() else f"{fraction * 100:g}%"
    if count is None:
        return f"{share} of the rows, picked with seed {seed}, held out of training"
    size = eval_size(count, fraction)
    return f"{size} of {count} rows ({share}), picked with seed {seed}, held out of training"


def describe_eval_file(path: str, rows: int | None) -> str:
    """What the run page says about an eval set read from a separate file."""
    if rows is None:
        return f"separate file {path}"
    return f"separate file {path}, {rows} row{'s' if rows != 1 else ''}"


def eval_source_problems(objective: str, eval_fraction: float, eval_file: str) -> list[Problem]:
    """Why a separate eval file cannot be used with these settings: a share of the dataset is chosen too, or the
    objective is DPO (measured on its held-out pairs, as eval_fraction is refused for it)."""
    if not eval_file:
        return []
    if objective == "dpo":
        return [
            Problem(
                "invalid_eval_source",
                f"An eval file ({eval_file}) applies to the SFT objective; a DPO run is measured on its held-out "
                "pairs instead.",
                "Clear the eval file for a DPO project, and choose how many pairs to hold out with preference_pairs.",
            )
        ]
    if eval_fraction > 0:
        return [
            Problem(
                "eval_source_conflict",
                f"Two eval sets are chosen: the eval file {eval_file} and a share of the dataset held out ('Eval set "
                f"(share of the rows)', eval_fraction = {eval_fraction:g}, under Checkpoints, logging and evaluation).",
                "Choose one: clear the eval file to evaluate on a seeded share of the dataset, or set eval_fraction to 0 "
                "to evaluate on the file (every dataset row then trains).",
                field="eval_fraction",
            )
        ]
    return []


NO_EVAL_SET_TO_KEEP_BEST_BY = Problem(
    "keep_best_without_eval_set",
    "keep_best_eval is on, but there is no eval set to judge the checkpoints by.",
    "Give an eval file, or set eval_fraction (e.g. 0.1) to hold out a share of the dataset; or turn keep_best_eval off.",
    field="keep_best_eval",
)


def eval_file_warnings(
    dataset: str | None, dataset_report: Any, eval_file: str | None, eval_report: Any
) -> list[Problem]:
    """What is allowed but likely a mistake about a separate eval file: it is the training file itself (the eval
    loss then measures rows the model trains on), or its rows have another format than the dataset's."""
    warnings = []
    if dataset and eval_file and os.path.realpath(dataset) == os.path.realpath(eval_file):
        warnings.append(
            Problem(
                "eval_file_is_the_dataset",
                f"The eval file {eval_file} is the training dataset itself: its eval loss measures rows the model "
                "trains on, so it cannot show overfitting.",
                "Give a file of rows held out of training, or clear the eval file and set eval_fraction (e.g. 0.1).",
            )
        )
    dataset_format = getattr(dataset_report, "format", "") or ""
    eval_format = getattr(eval_report, "format", "") or ""
    if dataset_format and eval_format and dataset_format != eval_format:
        warnings.append(
            Problem(
                "eval_file_format_differs",
                f"The eval file's rows are {eval_format} rows and the dataset's are {dataset_format}: the eval loss "
                "is measured on text laid out unlike what the model trains on.",
                "Give an eval file in the dataset's format, unless the difference is meant.",
            )
        )
    return warnings


def reference_answer(row: Any, fmt: str) -> str | None:
    """The answer the dataset gives for a row: its completion, alpaca output or first assistant turn."""
    if not isinstance(row, dict):
        return None
    if fmt == "prompt_completion":
        return str(row.get("completion", ""))
    if fmt == "alpaca":
        return str(row.get("output", ""))
    if fmt == "messages":
        messages = row.get("messages") or []
        first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"), None)
        return str(first.get("content", "")) if first else None
    return None
