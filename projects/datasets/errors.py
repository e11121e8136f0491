"""The one exception of the dataset layer, where a row sits in its file, and the problem codes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mtm.shared.problems import Problem

DEFAULT_MAX_ERRORS = 20

# Problem codes (DatasetError.problems[i].code); scripts and the API rely on them.
DATASET_REQUIRED = "dataset_required"
INVALID_PATH = "invalid_path"
NOT_ABSOLUTE = "not_absolute"
OUTSIDE_ALLOWED_ROOTS = "outside_allowed_roots"
DATASET_NOT_FOUND = "dataset_not_found"
NOT_A_FILE = "not_a_file"
DATASET_UNREADABLE = "dataset_unreadable"
DATASET_CHANGED = "dataset_changed"
DATASET_EMPTY = "dataset_empty"
DATASET_TOO_LARGE = "dataset_too_large"
DATASET_TOO_MANY_ROWS = "dataset_too_many_rows"
DATASET_ROW_TOO_LARGE = "dataset_row_too_large"
DATASET_ENCODING = "dataset_encoding"
DATASET_BAD_JSON = "dataset_bad_json"
DATASET_BAD_HEADER = "dataset_bad_header"
DATASET_BAD_ROW = "dataset_bad_row"
DATASET_TOO_MANY_ERRORS = "dataset_too_many_errors"
DATASET_UNKNOWN_FORMAT = "dataset_unknown_format"
DATASET_MIXED_FORMATS = "dataset_mixed_formats"
NO_CHAT_TEMPLATE = "no_chat_template"
CHAT_TEMPLATE_ERROR = "chat_template_error"
UPLOAD_BAD_NAME = "upload_bad_name"
UPLOAD_BAD_EXTENSION = "upload_bad_extension"


class DatasetError(Exception):
    """A dataset that cannot be used, with every Problem found (up to the error limit)."""

    def __init__(self, problems: list[Problem]):
        if not problems:
            raise ValueError("DatasetError needs at least one Problem")
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems))

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.problems]


@dataclass(frozen=True)
class RowRef:
    """Where a row is: its 1-based number among the rows, and the file line it starts on when known."""

    row: int
    line: int | None = None

    def __str__(self) -> str:
        return f"Row {self.row}" if self.line is None else f"Row {self.row} (line {self.line})"


def json_type_name(value: object) -> str:
    """The JSON name of a parsed value's type, as a person who wrote the file thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def human_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


class ProblemCollector:
    """Collects row problems up to a limit; the one past the limit turns into a final "and more" problem."""

    def __init__(self, max_errors: int = DEFAULT_MAX_ERRORS):
        if max_errors < 1:
            raise ValueError("max_errors must be at least 1")
        self.max_errors = max_errors
        self.problems: list[Problem] = []
        self.full = False

    def add(self, problem: Problem) -> None:
        if self.full:
            return
        if len(self.problems) >= self.max_errors:
            self.full = True
            self.problems.append(
                Problem(
                    DATASET_TOO_MANY_ERRORS,
                    f"… and more: stopped checking after the first {self.max_errors} problems.",
                    "Fix the rows above and check the file again; the same mistake is often repeated further down.",
                )
            )
            return
        self.problems.append(problem)

    def raise_if_any(self) -> None:
        if self.problems:
            raise DatasetError(self.problems)


def named_list(names: Iterable[object], most: int = 10) -> str:
    """'a', 'b', 'c' and 47 more: a list of names for a message, never longer than `most` names."""
    names = list(names)
    shown = ", ".join(f"'{n}'" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer can render chat rows; no_chat_template_problem() says why not."""
    return bool(getattr(tokenizer, "chat_template", None))


def no_chat_template_problem() -> Problem:
    return Problem(
        NO_CHAT_TEMPLATE,
        "The model's tokenizer has no chat template, so 'messages' rows cannot be rendered.",
        "Choose a chat/instruct model (its tokenizer_config.json has a chat_template), add a chat_template to this "
        "model's tokenizer_config.json, or convert the rows to prompt/completion.",
    )
