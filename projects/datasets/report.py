"""What the project form shows about a dataset: format, row count, first rows, token lengths, problems."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, computed_field

from mtm.shared.files import handle_sha256
from mtm.shared.problems import Problem
from projects.datasets.errors import DEFAULT_MAX_ERRORS, DatasetError, RowRef
from projects.datasets.loading import (
    DEFAULT_MAX_BYTES,
    SAMPLE_BYTES,
    Sample,
    load_dataset,
    open_dataset,
    sniff_kind,
)
from projects.datasets.token_tally import TokenStats, TokenTally

__all__ = [
    "DatasetRead",
    "DatasetReport",
    "TokenStats",
    "add_token_stats",
    "inspect_dataset",
    "read_dataset",
    "sample_key_of",
    "shorten",
]

PREVIEW_CHARS = 300
PREVIEW_ITEMS = 20


class DatasetReport(BaseModel):
    """What a check read of a dataset: its format, rows, first rows, token lengths and problems."""

    # Every field is in every answer: the API schema says so.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    path: str
    format: str | None = None
    kind: str | None = None  # how the file was read: "jsonl", "json" or "csv"
    rows: int = Field(0, description="Rows read; when `complete` is false, the file has at least this many.")
    complete: bool = Field(
        True,
        description="False when only the start of the file was read (large files): every row is checked when a run "
        "starts.",
    )
    size_bytes: int | None = None
    sha256: str | None = None
    preview: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    token_stats: TokenStats | None = None  # for preference pairs: the prompt and the longer answer
    pair_token_stats: dict[str, TokenStats] | None = Field(
        None,
        description="Preference pairs only: token lengths of the prompts (against the max prompt length) and of the "
        "chosen and rejected answers.",
    )
    token_stats_state: Literal["pending", "done"] | None = Field(
        None,
        description='Token lengths are counted by a worker: "pending" until then (send the same file again to get '
        'them), "done" once `token_stats` holds them; null when no model was given.',
    )

    @computed_field
    @property
    def valid(self) -> bool:
        return not self.errors


def shorten(value: Any, chars: int = PREVIEW_CHARS) -> Any:
    """A copy of a row for display: long strings cut with how much was left out, long lists cut too."""
    if isinstance(value, str):
        if len(value) <= chars:
            return value
        return f"{value[:chars]}… [{len(value) - chars} more characters]"
    if isinstance(value, dict):
        return {key: shorten(item, chars) for key, item in value.items()}
    if isinstance(value, list):
        items = [shorten(item, chars) for item in value[:PREVIEW_ITEMS]]
        if len(value) > PREVIEW_ITEMS:
            items.append(f"… [{len(value) - PREVIEW_ITEMS} more items]")
        return items
    return value


@dataclass
class DatasetRead:
    """The bounded read of a dataset: its report without token lengths, the rows read and the key of the part
    read (`sample_key`: the file's sha256, or the sha256 of its first SAMPLE_BYTES then '+' when it goes on)."""

    report: DatasetReport
    rows: list[dict]
    sample_key: str | None = None


def sample_key_of(file: Any) -> str:
    digest = hashlib.sha256()
    left = SAMPLE_BYTES
    while left > 0 and (chunk := file.read(min(left, 1024 * 1024))):
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest() + ("+" if file.read(1) else "")


def read_dataset(
    path: str | os.PathLike,
    preview_rows: int = 5,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
    full: bool = False,
    max_row_bytes: int | None = None,
    max_rows: int | None = None,
) -> DatasetRead:
    """Format, rows, first rows and problems of a dataset file, without a tokenizer; never raises for a bad file.

    By default only the start of the file is read (loading.Sample): what a web request may do; `full=True` reads
    every row, for the worker. A row over `max_row_bytes` (default: the MTM_DATASET_MAX_ROW_BYTES setting) is an
    error, and so is a file of more than `max_rows` rows (default: MTM_DATASET_MAX_ROWS), the rows past the start
    counted without being parsed. The path is trusted: call check_dataset_path first."""
    return _read(
        path,
        preview_rows,
        max_bytes=max_bytes,
        max_errors=max_errors,
        full=full,
        max_row_bytes=max_row_bytes,
        max_rows=max_rows,
    )


def _read(
    path: str | os.PathLike,
    preview_rows: int,
    *,
    max_bytes: int,
    max_errors: int,
    full: bool,
    max_row_bytes: int | None = None,
    max_rows: int | None = None,
    keep: int | None = None,
    sink: Callable[[RowRef, dict], None] | None = None,
) -> DatasetRead:
    """read_dataset, keeping only the first `keep` rows (None: all) and handing each good row to `sink` as it is
    read (loading.load_dataset)."""
    report = DatasetReport(path=str(path))
    if max_row_bytes is None:
        max_row_bytes = settings.MTM_DATASET_MAX_ROW_BYTES
    if max_rows is None:
        max_rows = settings.MTM_DATASET_MAX_ROWS
    try:
        with open_dataset(path) as file:  # opened once: a file swapped for a link after the check is not read
            report.size_bytes = os.fstat(file.fileno()).st_size
            report.kind, report.warnings = sniff_kind(path, file)  # kept when loading fails: they may explain why
            loaded = load_dataset(
                path,
                max_bytes=max_bytes,
                max_errors=max_errors,
                sample=None if full else Sample(),
                file=file,
                max_row_bytes=max_row_bytes,
                row_limit=max_rows,
                keep=keep,
                sink=sink,
            )
            file.seek(0)
            sample_key = sample_key_of(file)
            if loaded.complete:  # a partly read file is not hashed: that would read all of it
                file.seek(0)
                report.sha256 = handle_sha256(file)
    except DatasetError as exc:
        report.errors = exc.problems
        return DatasetRead(report, [])
    except OSError as exc:
        report.errors = [
            Problem("dataset_unreadable", f"Cannot read dataset {path}: {exc.strerror or exc}.", "Check the path.")
        ]
        return DatasetRead(report, [])
    report.format, report.kind, report.rows = loaded.format, loaded.kind, loaded.count
    report.complete = loaded.complete
    report.warnings = list(loaded.warnings)
    report.preview = [shorten(row) for row in loaded.rows[: max(preview_rows, 0)]]
    return DatasetRead(report, loaded.rows, sample_key)


def add_token_stats(
    report: DatasetReport,
    rows: list[dict],
    tokenizer: Any,
    max_seq_length: int | None = None,
    *,
    max_errors: int = DEFAULT_MAX_ERRORS,
    model: str = "",
    max_prompt_length: int | None = None,
) -> None:
    """Token lengths of the rows read into `report`, with their warnings; a row the tokenizer or its chat template
    (run in limited child processes) refuses goes to its errors. A full pass: for workers, not web requests."""
    if tokenizer is None or not rows or not report.valid:
        return
    tally = TokenTally(
        tokenizer, max_seq_length, model=model, max_errors=max_errors, max_prompt_length=max_prompt_length
    )
    for number, row in enumerate(rows, 1):
        tally.add(RowRef(number), row)
    tally.apply(report)


def inspect_dataset(
    path: str | os.PathLike,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    preview_rows: int = 5,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
    full: bool = False,
    model: str = "",
    max_prompt_length: int | None = None,
) -> DatasetReport:
    """read_dataset with the token lengths when a tokenizer is given: the whole report in one call, for the worker.
    Preference pairs are measured against `max_prompt_length` too (half of max_seq_length when not given).

    Only the preview's rows are kept: each row is checked, then tokenized a batch at a time and counted as it is
    read (token_tally), so a full read holds one batch of rows, never the file's."""
    tally = None
    if tokenizer is not None:
        tally = TokenTally(
            tokenizer, max_seq_length, model=model, max_errors=max_errors, max_prompt_length=max_prompt_length
        )
    read = _read(
        path,
        preview_rows,
        max_bytes=max_bytes,
        max_errors=max_errors,
        full=full,
        keep=max(preview_rows, 0),
        sink=tally.add if tally is not None else None,
    )
    if tally is not None:
        tally.apply(read.report)
    return read.report
