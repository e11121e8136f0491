"""What the project form shows about a dataset: format, row count, first rows, token lengths, problems."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from mtm.shared.files import handle_sha256
from mtm.shared.problems import Problem
from projects.datasets.errors import DEFAULT_MAX_ERRORS, DatasetError
from projects.datasets.examples import IGNORE_INDEX, cut_to_length, encode_rows
from projects.datasets.loading import (
    DEFAULT_MAX_BYTES,
    SAMPLE_BYTES,
    Sample,
    load_dataset,
    open_dataset,
    sniff_kind,
)
from projects.datasets.pairs import PREFERENCE, encode_pairs
from projects.datasets.template_sandbox import TemplateLimits

PREVIEW_CHARS = 300
PREVIEW_ITEMS = 20


@dataclass
class TokenStats:
    min: int
    p50: int
    p95: int
    max: int
    mean: float
    total: int
    over_max: int | None  # rows longer than max_seq_length, which will be truncated
    dropped: int | None  # rows with nothing left to learn once truncated, which will be skipped
    max_seq_length: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
            "mean": self.mean,
            "total": self.total,
            "over_max": self.over_max,
            "dropped": self.dropped,
            "max_seq_length": self.max_seq_length,
        }


@dataclass
class DatasetReport:
    path: str
    format: str | None = None
    kind: str | None = None  # how the file was read: "jsonl", "json" or "csv"
    rows: int = 0
    complete: bool = True  # False: only the start of the file was read, and it has at least `rows` rows
    size_bytes: int | None = None
    sha256: str | None = None
    preview: list[dict] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    token_stats: TokenStats | None = None
    # Preference pairs: the lengths of the prompts and of each answer (token_stats: prompt + the longer answer).
    pair_token_stats: dict[str, TokenStats] | None = None
    # Counted on a worker (token_stats.py): "pending" until then, "done" once counted, None when not asked for.
    token_stats_state: str | None = None

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "valid": self.valid,
            "format": self.format,
            "kind": self.kind,
            "rows": self.rows,
            "complete": self.complete,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "preview": self.preview,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "token_stats": self.token_stats.to_dict() if self.token_stats else None,
            "pair_token_stats": (
                {part: stats.to_dict() for part, stats in self.pair_token_stats.items()}
                if self.pair_token_stats
                else None
            ),
            "token_stats_state": self.token_stats_state,
        }


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


def _nearest_rank(ordered: list[int], fraction: float) -> int:
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def token_stats(encoded: list[tuple[list[int], list[int]]], max_seq_length: int | None) -> TokenStats:
    lengths = sorted(len(ids) for ids, _ in encoded)
    over_max = dropped = None
    if max_seq_length is not None:
        over_max = sum(1 for length in lengths if length > max_seq_length)
        dropped = sum(1 for _, labels in encoded if all(x == IGNORE_INDEX for x in labels[:max_seq_length]))
    return TokenStats(
        min=lengths[0],
        p50=_nearest_rank(lengths, 0.50),
        p95=_nearest_rank(lengths, 0.95),
        max=lengths[-1],
        mean=round(sum(lengths) / len(lengths), 1),
        total=sum(lengths),
        over_max=over_max,
        dropped=dropped,
        max_seq_length=max_seq_length,
    )


def _length_warnings(stats: TokenStats, rows: int, complete: bool = True) -> list[Problem]:
    of_rows = f"of {rows} rows" if complete else f"of the first {rows} rows"
    warnings = []
    if stats.over_max:
        warnings.append(
            Problem(
                "dataset_truncation",
                f"{stats.over_max} {of_rows} are longer than the max sequence length "
                f"({stats.max_seq_length} tokens) and will be truncated; the longest has {stats.max} tokens.",
                f"Raise the max sequence length (95% of rows fit in {stats.p95} tokens) or shorten those rows.",
            )
        )
    if stats.dropped:
        warnings.append(
            Problem(
                "dataset_rows_dropped",
                f"{stats.dropped} {of_rows} have nothing left to learn once truncated to "
                f"{stats.max_seq_length} tokens (the prompt fills them); they will be skipped.",
                "Raise the max sequence length or shorten their prompts.",
            )
        )
    return warnings


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
) -> DatasetRead:
    """Format, rows, first rows and problems of a dataset file, without a tokenizer; never raises for a bad file.

    By default only the start of the file is read (loading.Sample): what a web request may do; `full=True` reads
    every row, for the worker. A row over `max_row_bytes` (default: the MTM_DATASET_MAX_ROW_BYTES setting) is an
    error. The path is trusted: call check_dataset_path first."""
    report = DatasetReport(path=str(path))
    if max_row_bytes is None:
        max_row_bytes = settings.MTM_DATASET_MAX_ROW_BYTES
    try:
        with open_dataset(path) as file:  # opened once: a file swapped for a link after the check is not read
            report.size_bytes = os.fstat(file.fileno()).st_size
            report.kind, report.warnings = sniff_kind(path, file)  # kept when loading fails: they may explain why
            sample = None if full else Sample()
            loaded = load_dataset(
                path, max_bytes=max_bytes, max_errors=max_errors, sample=sample, file=file, max_row_bytes=max_row_bytes
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
    report.format, report.kind, report.rows = loaded.format, loaded.kind, len(loaded.rows)
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
    if report.format == PREFERENCE:
        try:
            lengths = encode_pairs(
                cut_to_length(rows, max_seq_length),
                tokenizer,
                limits=TemplateLimits.from_settings(),
                model=model,
                max_errors=max_errors,
            )
        except DatasetError as exc:
            report.errors.extend(exc.problems)
            return
        report.token_stats, report.pair_token_stats, warnings = pair_stats(
            lengths, max_seq_length, max_prompt_length, report.rows, report.complete
        )
        report.warnings.extend(warnings)
        return
    try:
        encoded = encode_rows(
            cut_to_length(rows, max_seq_length),
            report.format,
            tokenizer,
            max_errors=max_errors,
            template_limits=TemplateLimits.from_settings(),
            model=model,
        )
    except DatasetError as exc:
        report.errors.extend(exc.problems)
        return
    report.token_stats = token_stats(encoded, max_seq_length)
    report.warnings.extend(_length_warnings(report.token_stats, report.rows, report.complete))


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
    """read_dataset, then add_token_stats when a tokenizer is given: the whole report in one call, for the worker
    and for saves. Preference pairs are measured against `max_prompt_length` too (half of max_seq_length when not
    given)."""
    read = read_dataset(path, preview_rows, max_bytes=max_bytes, max_errors=max_errors, full=full)
    add_token_stats(
        read.report,
        read.rows,
        tokenizer,
        max_seq_length,
        max_errors=max_errors,
        model=model,
        max_prompt_length=max_prompt_length,
    )
    return read.report


def _length_stats(lengths: list[int], limit: int | None) -> TokenStats:
    ordered = sorted(lengths)
    return TokenStats(
        min=ordered[0],
        p50=_nearest_rank(ordered, 0.50),
        p95=_nearest_rank(ordered, 0.95),
        max=ordered[-1],
        mean=round(sum(ordered) / len(ordered), 1),
        total=sum(ordered),
        over_max=None if limit is None else sum(1 for length in ordered if length > limit),
        dropped=None,
        max_seq_length=limit,
    )


def pair_stats(
    lengths: list[tuple[int, int, int]],
    max_seq_length: int | None,
    max_prompt_length: int | None,
    rows: int,
    complete: bool = True,
) -> tuple[TokenStats, dict[str, TokenStats], list[Problem]]:
    """Stats of whole pairs (prompt + the longer answer) against max_seq_length, of prompts against the prompt
    limit, and of each answer; with warnings for prompts cut and answers cut."""
    prompt_limit = max_prompt_length or (max_seq_length // 2 if max_seq_length else None)
    kept = [(min(p, prompt_limit) if prompt_limit else p, c, r) for p, c, r in lengths]
    whole = _length_stats([p + max(c, r) for p, c, r in lengths], max_seq_length)
    parts = {
        "prompt": _length_stats([p for p, _, _ in lengths], prompt_limit),
        "chosen": _length_stats([c for _, c, _ in lengths], None),
        "rejected": _length_stats([r for _, _, r in lengths], None),
    }
    of_rows = f"of {rows} pairs" if complete else f"of the first {rows} pairs"
    warnings = []
    if parts["prompt"].over_max:
        warnings.append(
            Problem(
                "dataset_prompt_truncation",
                f"{parts['prompt'].over_max} {of_rows} have a prompt longer than the max prompt length "
                f"({prompt_limit} tokens): their start is cut; the longest has {parts['prompt'].max} tokens.",
                f"Raise max_prompt_length (95% of prompts fit in {parts['prompt'].p95} tokens) or shorten them.",
            )
        )
    if max_seq_length:
        cut = sum(1 for p, c, r in kept if p + max(c, r) > max_seq_length)
        if cut:
            warnings.append(
                Problem(
                    "dataset_truncation",
                    f"{cut} {of_rows} are longer than the max sequence length ({max_seq_length} tokens) with their "
                    "prompt and answer together: the end of the answer is cut.",
                    f"Raise the max sequence length (95% of pairs fit in {whole.p95} tokens) or shorten the answers.",
                )
            )
    return whole, parts, warnings
