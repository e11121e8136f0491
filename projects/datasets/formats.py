"""The row shapes the portal trains on, how a row's keys name its shape, and the checks of each field."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mtm.shared.problems import Problem
from projects.datasets.errors import (
    DATASET_BAD_ROW,
    DATASET_EMPTY,
    DATASET_MIXED_FORMATS,
    DATASET_UNKNOWN_FORMAT,
    DEFAULT_MAX_ERRORS,
    DatasetError,
    ProblemCollector,
    RowRef,
    json_type_name,
    named_list,
)
from projects.datasets.key_suggestions import did_you_mean
from projects.datasets.pairs import PAIR_KEYS, PAIR_SHAPE, PREFERENCE, pair_error

# The shapes supervised fine-tuning trains on; "preference" pairs are what the DPO objective trains on.
SUPPORTED_FORMATS = ("text", "prompt_completion", "messages", "alpaca")
ALL_FORMATS = (*SUPPORTED_FORMATS, PREFERENCE)
CHAT_ROLES = ("system", "user", "assistant", "tool")

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    PREFERENCE: PAIR_KEYS,
    "messages": ("messages",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {"alpaca": ("input",), PREFERENCE: ("prompt",)}
# A row holding the keys of several shapes takes the first one here (alpaca exports often carry a "text" too).
_DETECTION_ORDER = (PREFERENCE, "messages", "alpaca", "prompt_completion", "text")

SHAPES: dict[str, str] = {
    "text": '{"text": "..."}',
    "prompt_completion": '{"prompt": "...", "completion": "..."}',
    "messages": '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
    "alpaca": '{"instruction": "...", "input": "..." (optional), "output": "..."}',
    PREFERENCE: PAIR_SHAPE,
}
SHAPES_HINT = (
    "Every row must have one of these shapes: "
    + "; ".join(SHAPES[f] for f in SUPPORTED_FORMATS)
    + f"; or, for the DPO objective, preference pairs: {PAIR_SHAPE}."
)


def row_format(row: dict) -> str | None:
    """The shape a row's keys name, or None when they name none."""
    for fmt in _DETECTION_ORDER:
        if all(key in row for key in REQUIRED_KEYS[fmt]):
            return fmt
    return None


def ignored_keys(row: dict, fmt: str) -> set[str]:
    used = set(REQUIRED_KEYS[fmt]) | set(OPTIONAL_KEYS.get(fmt, ()))
    return {str(key) for key in row if key not in used}


def _text_field_error(row: dict, key: str, *, required: bool = True) -> str | None:
    value = row.get(key)
    if not required and value is None:
        return None
    if not isinstance(value, str):
        return f"'{key}' must be a string, got {json_type_name(value)}"
    if required and not value.strip():
        return f"'{key}' is empty"
    return None


def _messages_error(messages: object) -> str | None:
    if not isinstance(messages, list):
        return f"'messages' must be an array of {{role, content}} objects, got {json_type_name(messages)}"
    if not messages:
        return "'messages' is empty"
    has_answer = False
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return f"{where} must be an object with 'role' and 'content', got {json_type_name(message)}"
        role = message.get("role")
        if role not in CHAT_ROLES:
            shown = f"'{role}'" if isinstance(role, str) else json_type_name(role)
            return f"{where}.role must be one of {', '.join(CHAT_ROLES)}, got {shown}"
        content = message.get("content")
        if content is None and message.get("tool_calls"):
            continue  # an assistant turn that only calls tools
        if not isinstance(content, str):
            return f"{where}.content must be a string, got {json_type_name(content)}"
        if role == "assistant" and content.strip():
            has_answer = True
    if not has_answer:
        return "'messages' has no assistant message with content, so there is nothing to learn from it"
    return None


def row_error(row: dict, fmt: str) -> str | None:
    """What is wrong with a row of a known shape (without the "Row N" prefix), or None."""
    if fmt == PREFERENCE:
        return pair_error(row)
    if fmt == "messages":
        return _messages_error(row.get("messages"))
    for key in REQUIRED_KEYS[fmt]:
        error = _text_field_error(row, key)
        if error:
            return error
    for key in OPTIONAL_KEYS.get(fmt, ()):
        error = _text_field_error(row, key, required=False)
        if error:
            return error
    return None


def _format_problem(ref: RowRef, fmt: str, message: str) -> Problem:
    hint = f"Fix {str(ref).lower()} and check the file again. A '{fmt}' row looks like {SHAPES[fmt]}."
    if fmt == "messages":
        hint += " Chat data needs JSON Lines or a JSON array: CSV cells can only hold text."
    return Problem(DATASET_BAD_ROW, f"{ref}: {message}.", hint)


class RowChecker:
    """Takes rows one at a time (so a JSONL file is checked while it streams) and keeps the good ones: all of them,
    or only the first `keep`, each good row handed to `sink` too as it comes (a sink that answers True ends the
    reading: `halted`). `count` is the good rows so far, kept or not.

    The first row with a recognisable shape fixes the dataset's format; a later row of another shape is the
    "mixed formats" error, reported once with the first such row and how many more there are.
    """

    def __init__(
        self,
        max_errors: int = DEFAULT_MAX_ERRORS,
        *,
        keep: int | None = None,
        sink: Callable[[RowRef, dict], bool | None] | None = None,
    ):
        self.collector = ProblemCollector(max_errors)
        self.rows: list[dict] = []
        self.keep, self.sink = keep, sink
        self.count = 0
        self.halted = False
        self.format: str | None = None
        self.format_ref: RowRef | None = None
        self.ignored: set[str] = set()
        self._mixed_first: tuple[RowRef, str] | None = None
        self._mixed_count = 0
        self._mixed_position: int | None = None
        self.fatal = False
        self.sample_ended = False  # a bounded read stopped before the end of the file

    @property
    def stopped(self) -> bool:
        return self.fatal or self.collector.full or self.halted

    def problem(self, problem: Problem, *, fatal: bool = False) -> None:
        """A problem found while reading (bad JSON, bad encoding); fatal ones end the reading."""
        self.collector.add(problem)
        self.fatal = self.fatal or fatal

    def add(self, ref: RowRef, row: object) -> None:
        if not isinstance(row, dict):
            self.collector.add(
                Problem(
                    DATASET_BAD_ROW,
                    f"{ref}: expected an object ({{...}}), got {json_type_name(row)}.",
                    f"Fix {str(ref).lower()}. {SHAPES_HINT}",
                )
            )
            return
        fmt = row_format(row)
        pair_like = any(key in row for key in PAIR_KEYS) or (self.format == PREFERENCE and "prompt" in row)
        if fmt is None and self.format in (None, PREFERENCE) and pair_like:
            self.collector.add(_format_problem(ref, PREFERENCE, pair_error(row) or "not a pair"))  # a key missing
            return
        if fmt is None:
            keys = named_list(row) or "no keys"
            guess = did_you_mean([str(key) for key in row], REQUIRED_KEYS)
            self.collector.add(
                Problem(
                    DATASET_UNKNOWN_FORMAT, f"{ref} has {keys}, which match no supported row shape.{guess}", SHAPES_HINT
                )
            )
            return
        if self.format is None:
            self.format, self.format_ref = fmt, ref
        elif fmt != self.format:
            self._mixed(ref, fmt)
            return
        error = row_error(row, fmt)
        if error:
            self.collector.add(_format_problem(ref, fmt, error))
            return
        self.ignored |= ignored_keys(row, fmt)
        self.count += 1
        if self.keep is None or len(self.rows) < self.keep:
            self.rows.append(row)
        if self.sink is not None and self.sink(ref, row):
            self.halted = True

    def _mixed(self, ref: RowRef, fmt: str) -> None:
        self._mixed_count += 1
        if self._mixed_first is None:
            self._mixed_first = (ref, fmt)
            before = len(self.collector.problems)
            self.collector.add(Problem(DATASET_MIXED_FORMATS, "", ""))  # placeholder, written in finish()
            if len(self.collector.problems) > before and self.collector.problems[before].code == DATASET_MIXED_FORMATS:
                self._mixed_position = before

    def _mixed_problem(self) -> Problem:
        assert self._mixed_first is not None and self.format_ref is not None
        ref, fmt = self._mixed_first
        more = self._mixed_count - 1
        tail = f" ({more} more row{'s' if more != 1 else ''} differ too)" if more else ""
        return Problem(
            DATASET_MIXED_FORMATS,
            f"{ref} is a '{fmt}' row but {str(self.format_ref).lower()} is a '{self.format}' row{tail}; "
            "every row must have the same shape.",
            f"Convert the rows to one shape, or split the file. A '{self.format}' row looks like "
            f"{SHAPES[self.format]}.",
        )

    def finish(self, *, empty_message: str = "The dataset has no rows.") -> tuple[list[dict], str]:
        """The rows kept and their format, or DatasetError with every problem found."""
        problems = self.collector.problems
        if self._mixed_position is not None:
            problems[self._mixed_position] = self._mixed_problem()
        if problems:
            raise DatasetError(problems)
        if self.format is None:
            raise DatasetError([Problem(DATASET_EMPTY, empty_message, "Add at least one row. " + SHAPES_HINT)])
        return self.rows, self.format


def check_rows(rows: Iterable[object], fmt: str, *, max_errors: int = DEFAULT_MAX_ERRORS, first_row: int = 1) -> None:
    """Every row is a valid row of `fmt` (a format chosen by the caller, not detected); DatasetError otherwise,
    naming rows from `first_row`."""
    collector = ProblemCollector(max_errors)
    for number, row in enumerate(rows, first_row):
        ref = RowRef(number)
        if not isinstance(row, dict):
            error = f"expected an object ({{...}}), got {json_type_name(row)}"
        else:
            missing = [repr(key) for key in REQUIRED_KEYS[fmt] if key not in row]
            error = f"missing {', '.join(missing)}" if missing else row_error(row, fmt)
        if error:
            collector.add(_format_problem(ref, fmt, error))
            if collector.full:
                break
    collector.raise_if_any()


def detect_format(rows: Iterable[object], *, max_errors: int = DEFAULT_MAX_ERRORS) -> str:
    """The format shared by all rows ("text", "prompt_completion", "messages", "alpaca" or "preference").

    Raises DatasetError naming the rows (1-based) that are not objects, match no shape, differ from the
    first row's shape, or have a field of the wrong type or empty.
    """
    checker = RowChecker(max_errors)
    for number, row in enumerate(rows, 1):
        checker.add(RowRef(number), row)
        if checker.stopped:
            break
    return checker.finish()[1]
