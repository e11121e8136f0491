"""Token lengths of a dataset's rows, tokenized a batch at a time as they are read: of each row only its length is
kept (counted by length, not listed), never its tokens or the row itself, so a full pass over a dataset of millions
of rows holds one batch of rows and their tokens at a time."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from pydantic import BaseModel

from models_registry.template_sandbox import TemplateLimits
from mtm.shared.problems import Problem
from projects.datasets.errors import (
    CHAT_TEMPLATE_ERROR,
    DATASET_TOO_MANY_ERRORS,
    DEFAULT_MAX_ERRORS,
    DatasetError,
    ProblemCollector,
    RowRef,
)
from projects.datasets.examples import IGNORE_INDEX, cut_to_length, encode_rows
from projects.datasets.formats import row_format
from projects.datasets.pairs import PREFERENCE, encode_pairs

# One batch is what one limited child renders at most for chat rows (examples._chunks): rows, characters.
BATCH_ROWS = 2000
BATCH_CHARS = 8 * 1024 * 1024
# Problems of single rows: after them the other batches are still tokenized, to name more such rows.
_ROW_PROBLEMS = (CHAT_TEMPLATE_ERROR, DATASET_TOO_MANY_ERRORS)


class TokenStats(BaseModel):
    """Token lengths of a dataset's rows, and how many of them max_seq_length truncates or leaves nothing to learn."""

    min: int
    p50: int
    p95: int
    max: int
    mean: float
    total: int
    over_max: int | None  # rows longer than max_seq_length, which will be truncated
    dropped: int | None  # rows with nothing left to learn once truncated, which will be skipped
    max_seq_length: int | None


class LengthCounts:
    """How many rows have each length: all that the figures need, in the memory of the distinct lengths."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.rows = 0
        self.total = 0

    def add(self, length: int) -> None:
        self.counts[length] += 1
        self.rows += 1
        self.total += length

    def _nearest_rank(self, fraction: float) -> int:
        rank, seen = max(1, math.ceil(fraction * self.rows)), 0
        for length in sorted(self.counts):
            seen += self.counts[length]
            if seen >= rank:
                return length
        raise ValueError("no lengths counted")

    def stats(self, limit: int | None, dropped: int | None = None) -> TokenStats:
        return TokenStats(
            min=min(self.counts),
            p50=self._nearest_rank(0.50),
            p95=self._nearest_rank(0.95),
            max=max(self.counts),
            mean=round(self.total / self.rows, 1),
            total=self.total,
            over_max=None if limit is None else sum(n for length, n in self.counts.items() if length > limit),
            dropped=dropped,
            max_seq_length=limit,
        )


def _chars(value: Any) -> int:
    """The characters of the strings in a row (its messages' too)."""
    if isinstance(value, str):
        return len(value)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return sum(len(item) if isinstance(item, str) else _chars(item) for item in items)


class TokenTally:
    """Token lengths of a dataset's good rows, given one at a time in file order (`add`: a RowChecker's sink).

    Tallying stops at a row that does not follow the last one given (a row between them was refused: the report
    has reading problems then, and no token lengths), or when the tokenizer or chat template refuses more than
    rows (no chat template, a template past its limits) or more rows than the error limit."""

    def __init__(
        self,
        tokenizer: Any,
        max_seq_length: int | None,
        *,
        model: str = "",
        max_errors: int = DEFAULT_MAX_ERRORS,
        max_prompt_length: int | None = None,
    ):
        self.tokenizer, self.max_seq_length, self.model = tokenizer, max_seq_length, model
        self.max_errors = max_errors
        self.prompt_limit = max_prompt_length or (max_seq_length // 2 if max_seq_length else None)
        self.limits = TemplateLimits.from_settings()
        self.collector = ProblemCollector(max_errors)
        self.format: str | None = None
        self.given = 0
        self.stopped = False
        self._batch: list[dict] = []
        self._batch_chars = 0
        self.lengths = LengthCounts()  # whole rows; for pairs the prompt and the longer answer
        self.dropped = 0
        self.parts = {"prompt": LengthCounts(), "chosen": LengthCounts(), "rejected": LengthCounts()}
        self.pairs_cut = 0

    def add(self, ref: RowRef, row: dict) -> None:
        if self.stopped:
            return
        if ref.row != self.given + 1:
            self.stopped, self._batch = True, []
            return
        self.given += 1
        if self.format is None:
            self.format = row_format(row)
        self._batch.append(row)
        self._batch_chars += _chars(row)
        if len(self._batch) >= BATCH_ROWS or self._batch_chars >= BATCH_CHARS:
            self._flush()

    def _flush(self) -> None:
        rows, first = self._batch, self.given - len(self._batch) + 1
        self._batch, self._batch_chars = [], 0
        if not rows or self.stopped:
            return
        rows = cut_to_length(rows, self.max_seq_length)
        try:
            if self.format == PREFERENCE:
                lengths = encode_pairs(
                    rows,
                    self.tokenizer,
                    limits=self.limits,
                    model=self.model,
                    max_errors=self.max_errors,
                    first_row=first,
                )
                for prompt, chosen, rejected in lengths:
                    self._count_pair(prompt, chosen, rejected)
                return
            encoded = encode_rows(
                rows,
                self.format,
                self.tokenizer,
                max_errors=self.max_errors,
                template_limits=self.limits,
                model=self.model,
                first_row=first,
                checked=True,
            )
        except DatasetError as exc:
            for problem in exc.problems:
                self.collector.add(problem)
            if self.collector.full or any(p.code not in _ROW_PROBLEMS for p in exc.problems):
                self.stopped = True
            return
        if self.collector.problems:  # once a row is refused the report shows the refused rows, not lengths
            return
        for ids, labels in encoded:
            self.lengths.add(len(ids))
            limit = self.max_seq_length
            if limit is not None and all(label == IGNORE_INDEX for label in labels[:limit]):
                self.dropped += 1

    def _count_pair(self, prompt: int, chosen: int, rejected: int) -> None:
        answer = max(chosen, rejected)
        self.lengths.add(prompt + answer)
        for part, length in zip(self.parts.values(), (prompt, chosen, rejected), strict=True):
            part.add(length)
        kept = min(prompt, self.prompt_limit) if self.prompt_limit else prompt
        if self.max_seq_length and kept + answer > self.max_seq_length:
            self.pairs_cut += 1

    def apply(self, report: Any) -> None:
        """Put the lengths (or the rows refused) and their warnings on `report` (a DatasetReport), unless reading
        the file found problems: those come first."""
        if not report.valid:
            return
        self._flush()
        if self.collector.problems:
            report.errors.extend(self.collector.problems)
            return
        if not self.lengths.rows:
            return
        if self.format == PREFERENCE:
            self._apply_pairs(report)
            return
        limit = self.max_seq_length
        report.token_stats = stats = self.lengths.stats(limit, None if limit is None else self.dropped)
        report.warnings.extend(_length_warnings(stats, _of_rows(report, "rows")))

    def _apply_pairs(self, report: Any) -> None:
        limit, prompt_limit = self.max_seq_length, self.prompt_limit
        report.token_stats = whole = self.lengths.stats(limit)
        report.pair_token_stats = parts = {
            "prompt": self.parts["prompt"].stats(prompt_limit),
            "chosen": self.parts["chosen"].stats(None),
            "rejected": self.parts["rejected"].stats(None),
        }
        of_rows = _of_rows(report, "pairs")
        if parts["prompt"].over_max:
            report.warnings.append(
                Problem(
                    "dataset_prompt_truncation",
                    f"{parts['prompt'].over_max} {of_rows} have a prompt longer than the max prompt length "
                    f"({prompt_limit} tokens): their start is cut; the longest has {parts['prompt'].max} tokens.",
                    f"Raise max_prompt_length (95% of prompts fit in {parts['prompt'].p95} tokens) or shorten them.",
                )
            )
        if self.pairs_cut:
            report.warnings.append(
                Problem(
                    "dataset_truncation",
                    f"{self.pairs_cut} {of_rows} are longer than the max sequence length ({limit} tokens) with "
                    "their prompt and answer together: the end of the answer is cut.",
                    f"Raise the max sequence length (95% of pairs fit in {whole.p95} tokens) or shorten the answers.",
                )
            )


def _of_rows(report: Any, noun: str) -> str:
    return f"of {report.rows} {noun}" if report.complete else f"of the first {report.rows} {noun}"


def _length_warnings(stats: TokenStats, of_rows: str) -> list[Problem]:
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
