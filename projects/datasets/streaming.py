"""A few rows of a dataset file, read without holding the others: the first rows, the last rows, the rows at given
positions, and how many rows there are. For files the portal made itself (a run's snapshot, which the trainer read
whole), so the path is resolved here, as load_rows does. Each raises DatasetError for a problem in the rows it
reads; reading stops as soon as the rows asked for are in hand."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable

from projects.datasets.errors import RowRef
from projects.datasets.loading import load_dataset
from projects.datasets.row_size import DEFAULT_MAX_ROW_BYTES


def _scan(path: str | os.PathLike, keep: int, sink: Callable[[RowRef, dict], bool | None], max_row_bytes: int):
    return load_dataset(os.path.realpath(path), keep=keep, sink=sink, max_row_bytes=max_row_bytes)


def first_rows(path: str | os.PathLike, count: int, *, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> list[dict]:
    """The first `count` rows."""
    if count < 1:
        return []
    seen = 0

    def enough(_ref: RowRef, _row: dict) -> bool:
        nonlocal seen
        seen += 1
        return seen >= count

    return _scan(path, count, enough, max_row_bytes).rows


def last_rows(path: str | os.PathLike, count: int, *, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> list[dict]:
    """The last `count` rows (every row is read; `count` are held)."""
    if count < 1:
        return []
    last: deque[dict] = deque(maxlen=count)
    _scan(path, 0, lambda _ref, row: last.append(row), max_row_bytes)
    return list(last)


def row_count(path: str | os.PathLike, *, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> int:
    """How many rows the file has (each read and checked, none held)."""
    return _scan(path, 0, lambda _ref, _row: None, max_row_bytes).count


def rows_at(
    path: str | os.PathLike, positions: Iterable[int], *, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
) -> list[dict]:
    """The rows at `positions` (0-based, as in load_rows' list), in the file's order."""
    wanted = set(positions)
    if not wanted:
        return []
    last_wanted = max(wanted)
    picked: list[dict] = []
    position = -1

    def pick(_ref: RowRef, row: dict) -> bool:
        nonlocal position
        position += 1
        if position in wanted:
            picked.append(row)
        return position >= last_wanted

    _scan(path, 0, pick, max_row_bytes)
    return picked
