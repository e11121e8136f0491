"""Reading a dataset file (JSON Lines, JSON array or CSV) into checked rows, naming the row of every problem."""

from __future__ import annotations

import codecs
import csv
import errno
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mtm.shared.nofollow import LINK_ERRORS, open_file_nofollow
from mtm.shared.problems import Problem
from projects.datasets.errors import (
    DATASET_BAD_HEADER,
    DATASET_BAD_JSON,
    DATASET_BAD_ROW,
    DATASET_CHANGED,
    DATASET_EMPTY,
    DATASET_ENCODING,
    DATASET_TOO_LARGE,
    DATASET_UNREADABLE,
    DEFAULT_MAX_ERRORS,
    DatasetError,
    RowRef,
    human_bytes,
    named_list,
)
from projects.datasets.formats import SHAPES_HINT, RowChecker
from projects.datasets.row_count import json_array_rows_past, rows_past, too_many_rows
from projects.datasets.row_size import (
    DEFAULT_MAX_ROW_BYTES,
    BoundedLines,
    RecordTooLong,
    bounded_lines,
    row_too_large,
    text_size,
)

DEFAULT_MAX_BYTES = 2 * 1024**3
# What a request reads of a dataset: the first SAMPLE_BYTES, at most SAMPLE_ROWS rows. Every row is read on the
# worker when a run starts (the resolve stage), so the web process never holds more than this of a file.
SAMPLE_BYTES = 8 * 1024 * 1024
SAMPLE_ROWS = 2000
FILE_KINDS = ("jsonl", "json", "csv")
EXTENSION_KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
KIND_NAMES = {"jsonl": "JSON Lines", "json": "a JSON array", "csv": "CSV"}
# csv's default cap (128 KiB a field) is below one long document; raised once, for the whole process.
CSV_FIELD_LIMIT = 256 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 64 * 1024
_JSON_SPACE = re.compile(r"[ \t\r\n]*")
_UTF8_HINT = (
    "Save the file as UTF-8 (spreadsheets: 'CSV UTF-8'; or convert it: iconv -f latin1 -t utf-8 in.csv > out.csv)."
)


@dataclass(frozen=True)
class Sample:
    """How much of a file a bounded read looks at."""

    bytes: int = SAMPLE_BYTES
    rows: int = SAMPLE_ROWS


@dataclass
class LoadedDataset:
    rows: list[dict]  # the rows kept: all of them unless load_dataset was told to keep fewer
    format: str
    kind: str
    warnings: list[Problem] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)
    complete: bool = True  # False when a sample ended before the file did: the file has at least `count` rows
    count: int = 0  # the rows read, kept or not


def open_dataset(path: str | os.PathLike) -> BinaryIO:
    """The dataset file at `path` (already resolved: check_dataset_path's `path`) opened once, without following
    any link on its path, so a file swapped for a link after the check is refused instead of read. Readers take
    the returned file, never the path again. DatasetError when a component is a link or it is not a regular file;
    OSError when it cannot be opened."""
    try:
        fd = open_file_nofollow(str(path))
    except OSError as exc:
        if exc.errno not in (*LINK_ERRORS, errno.EINVAL):
            raise
        raise DatasetError(
            [
                Problem(
                    DATASET_CHANGED,
                    f"Dataset {path} is not a regular file reached without links: a file or folder on its path is "
                    "a link or something other than a file (or was replaced by one after it was checked). It was "
                    "not read.",
                    "Give the path of the dataset file itself, with no links on its path, and check again.",
                )
            ]
        ) from None
    return os.fdopen(fd, "rb")


@dataclass
class _Source:
    """The bytes a reader reads: the whole opened file, or its first bytes (cut after a line break when there is
    one, unless what follows the last one is already longer than a row may be: the reader then names that row).
    `name` is only for messages."""

    name: str
    file: BinaryIO
    head: bytes | None = None
    cut: bool = False  # the head ends before the file does

    @classmethod
    def of(cls, name: str, file: BinaryIO, sample: Sample | None, max_row_bytes: int) -> _Source:
        if sample is None:
            return cls(name, file)
        file.seek(0)
        head = file.read(sample.bytes + 1)
        if len(head) <= sample.bytes:
            return cls(name, file, head)
        head = head[: sample.bytes]
        line_end = head.rfind(b"\n")
        if line_end < 0 or len(head) - line_end - 1 > max_row_bytes:
            return cls(name, file, head, cut=True)
        return cls(name, file, head[: line_end + 1], cut=True)

    def open(self) -> BinaryIO:
        """A fresh handle on the same opened file (closing it leaves the file open), read from its start."""
        if self.head is not None:
            return io.BytesIO(self.head)
        handle = os.fdopen(os.dup(self.file.fileno()), "rb")
        handle.seek(0)
        return handle

    def read(self) -> bytes:
        if self.head is not None:
            return self.head
        self.file.seek(0)
        return self.file.read()


def _encoding_problem(where: str, exc: UnicodeDecodeError) -> Problem:
    bad = exc.object[exc.start : exc.start + 1].hex()
    return Problem(DATASET_ENCODING, f"{where} is not valid UTF-8 (byte 0x{bad}).", _UTF8_HINT)


def _binary_problem(head: bytes, name: str) -> Problem | None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Problem(DATASET_ENCODING, f"{name} is UTF-16 text; only UTF-8 is read.", _UTF8_HINT)
    if head.startswith(b"PAR1"):
        what = "a Parquet file"
    elif head.startswith(b"PK\x03\x04"):
        what = "a zip archive (an Excel workbook is one)"
    elif b"\x00" in head:
        what = "a binary file"
    else:
        return None
    return Problem(
        DATASET_ENCODING,
        f"{name} is {what}, not text.",
        "Export the data as JSON Lines (.jsonl), a JSON array (.json) or CSV (.csv), in UTF-8.",
    )


def sniff_kind(path: str | os.PathLike, file: BinaryIO | None = None) -> tuple[str, list[Problem]]:
    """How to read the file ("jsonl", "json" or "csv"), from its first non-space byte; the extension only
    breaks no ties, and a disagreement between the two is returned as a warning. Reads `file` (the opened
    dataset) when given, else opens `path` as open_dataset does."""
    path = Path(path)
    if file is None:
        with open_dataset(path) as fh:
            head = fh.read(_SNIFF_BYTES)
    else:
        file.seek(0)
        head = file.read(_SNIFF_BYTES)
    problem = _binary_problem(head, path.name)
    if problem:
        raise DatasetError([problem])
    body = head.removeprefix(_BOM).lstrip()
    if not body:
        raise DatasetError([Problem(DATASET_EMPTY, f"{path.name} is empty.", "Add at least one row. " + SHAPES_HINT)])
    first = body[:1]
    kind = "json" if first == b"[" else "jsonl" if first == b"{" else "csv"
    named = EXTENSION_KINDS.get(path.suffix.lower())
    warnings = []
    if named != kind:
        said = f"named '{path.suffix}'" if path.suffix else "without an extension"
        reason = f"starts with '{first.decode('latin1')}'" if kind != "csv" else "does not start with '{' or '['"
        warnings.append(
            Problem(
                "dataset_extension_mismatch",
                f"{path.name} is {said} but {reason}, so it was read as {KIND_NAMES[kind]}.",
                "Rename the file to match its content (.jsonl, .json or .csv) to avoid surprises.",
            )
        )
    return kind, warnings


def _past_row_limit(checker: RowChecker, source: _Source, rows_read: int, row_limit: int | None) -> bool:
    """Whether another row after `rows_read` is past the most a dataset may have; then that is the (fatal) problem."""
    if row_limit is None or rows_read < row_limit:
        return False
    checker.problem(too_many_rows(source.name, row_limit), fatal=True)
    return True


def _read_jsonl(
    source: _Source, checker: RowChecker, max_rows: int | None, max_row_bytes: int, row_limit: int | None
) -> None:
    row = 0
    with source.open() as fh:
        for line_no, (raw, size, ended) in enumerate(bounded_lines(fh, max_row_bytes), 1):
            if raw is None:  # longer than a row may be: never decoded
                if max_rows is not None and row >= max_rows:
                    checker.sample_ended = True
                    return
                if _past_row_limit(checker, source, row, row_limit):
                    return
                row += 1
                checker.problem(
                    row_too_large(RowRef(row, line_no), size, max_row_bytes, at_least=not ended and source.cut)
                )
                if checker.stopped:
                    return
                continue
            if (source.cut and not ended) or (max_rows is not None and row >= max_rows and raw.strip()):
                checker.sample_ended = True  # the start of a row longer than the sample, or one past the rows read
                return
            if raw.strip() and _past_row_limit(checker, source, row, row_limit):
                return
            if line_no == 1:
                raw = raw.removeprefix(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                checker.problem(_encoding_problem(f"Line {line_no}", exc), fatal=True)
                return
            if not text.strip():
                continue
            row += 1
            ref = RowRef(row, line_no)
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                if row == 1 and exc.msg.startswith(("Expecting property name", "Unterminated")):
                    hint = "Each line must hold one complete JSON object. A pretty-printed file must be a JSON array ([...])."
                else:
                    hint = "Each line must hold one complete JSON object; check quotes, commas and braces."
                checker.problem(
                    Problem(DATASET_BAD_JSON, f"{ref}: invalid JSON: {exc.msg} at column {exc.colno}.", hint)
                )
            except RecursionError:
                checker.problem(Problem(DATASET_BAD_JSON, f"{ref}: {TOO_DEEP}", TOO_DEEP_HINT))
            except ValueError as exc:  # after JSONDecodeError, its subclass: a number too long to convert
                checker.problem(_unreadable_value(ref, exc))
            else:
                checker.add(ref, value)
            if checker.stopped:
                return


TOO_DEEP = "the JSON is nested too deeply to read (thousands of levels of brackets)."
TOO_DEEP_HINT = "Rows are flat objects of strings (messages: a list of role/content objects); flatten the data."


def _unreadable_value(ref: RowRef, exc: ValueError) -> Problem:
    """A row Python's JSON reader refuses past its syntax check: an integer of thousands of digits."""
    return Problem(
        DATASET_BAD_JSON,
        f"{ref}: a value cannot be read ({str(exc).split(';')[0]}).",
        "Numbers that long are not training text: write them as strings or remove them.",
    )


def _json_problem(message: str) -> Problem:
    return Problem(
        DATASET_BAD_JSON,
        message,
        "A .json dataset must be one array of row objects: [{...}, {...}]. Check commas and brackets there.",
    )


class _LineCounter:
    """Line numbers of growing positions in one text, counted once (a row-by-row recount would be quadratic)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _cut_by_sample(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether a decoding error is only the sample ending inside a row: an open string, or nothing (or a few
    characters of a literal such as 'tr') left after the error's position."""
    return exc.msg.startswith("Unterminated string") or len(text) - exc.pos <= 5


def _read_array_items(
    text: str,
    pos: int,
    lines: _LineCounter,
    checker: RowChecker,
    source: _Source,
    max_rows: int | None,
    max_row_bytes: int,
    row_limit: int | None,
) -> int | None:
    """Decode the rows of an array one by one (so each row knows its line); the position of the closing ']',
    or None when reading had to stop (a problem, or the end of a sample: then checker.sample_ended is set)."""
    decoder = json.JSONDecoder()
    row = 0
    while True:
        row += 1
        if max_rows is not None and row > max_rows:
            checker.sample_ended = True
            return None
        if _past_row_limit(checker, source, row - 1, row_limit):
            return None
        ref = RowRef(row, lines.at(pos))
        start = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if source.cut and _cut_by_sample(text, exc):
                if (size := text_size(text, start, len(text), max_row_bytes)) > max_row_bytes:
                    checker.problem(row_too_large(ref, size, max_row_bytes, at_least=True))
                checker.sample_ended = True
                return None
            checker.problem(
                _json_problem(f"{ref}: invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."), fatal=True
            )
            return None
        except RecursionError:
            checker.problem(Problem(DATASET_BAD_JSON, f"{ref}: {TOO_DEEP}", TOO_DEEP_HINT), fatal=True)
            return None
        except ValueError as exc:
            checker.problem(_unreadable_value(ref, exc), fatal=True)
            return None
        if (size := text_size(text, start, pos, max_row_bytes)) > max_row_bytes:
            checker.problem(row_too_large(ref, size, max_row_bytes))
        else:
            checker.add(ref, value)
        if checker.stopped:
            return None
        pos = _JSON_SPACE.match(text, pos).end()
        separator = text[pos : pos + 1]
        if separator == "]":
            return pos
        if not separator and source.cut:
            checker.sample_ended = True
            return None
        if separator != ",":
            found = f"'{separator}'" if separator else "the end of the file"
            checker.problem(
                _json_problem(f"{ref}: expected ',' or ']' after this row, found {found} at line {lines.at(pos)}."),
                fatal=True,
            )
            return None
        pos = _JSON_SPACE.match(text, pos + 1).end()


# A JSON array is decoded whole (several times its size in memory); past this a dataset is read as JSONL instead.
MAX_JSON_ARRAY_BYTES = 64 * 1024 * 1024


def _read_json_array(
    source: _Source, checker: RowChecker, max_rows: int | None, max_row_bytes: int, row_limit: int | None
) -> None:
    if source.head is None and (size := os.fstat(source.file.fileno()).st_size) > MAX_JSON_ARRAY_BYTES:
        checker.problem(
            Problem(
                DATASET_TOO_LARGE,
                f"{source.name} is a JSON array of {human_bytes(size)}; an array is read whole, so one may be at most "
                f"{human_bytes(MAX_JSON_ARRAY_BYTES)}.",
                "Write it as JSON Lines (one row per line, a .jsonl file), which is read a row at a time: "
                'python -c "import json,sys; [print(json.dumps(r)) for r in json.load(open(sys.argv[1]))]" '
                "data.json > data.jsonl",
            ),
            fatal=True,
        )
        return
    data = source.read().removeprefix(_BOM)
    try:
        # A sample may end inside a character: the incremental decoder keeps those bytes back instead of failing.
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=not source.cut)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        checker.problem(_encoding_problem(f"Line {line}", exc), fatal=True)
        return
    del data
    lines = _LineCounter(text)
    pos = _JSON_SPACE.match(text, 0).end()
    if text[pos : pos + 1] != "[":
        checker.problem(_json_problem("The file is not a JSON array: it must start with '['."), fatal=True)
        return
    pos = _JSON_SPACE.match(text, pos + 1).end()
    if text[pos : pos + 1] != "]":
        pos = _read_array_items(text, pos, lines, checker, source, max_rows, max_row_bytes, row_limit)
        if pos is None:
            return
    rest = _JSON_SPACE.match(text, pos + 1).end()
    if rest < len(text):
        checker.problem(_json_problem(f"Unexpected text after the closing ']' at line {lines.at(rest)}."), fatal=True)


def _first_bad_utf8_line(source: _Source) -> Problem:
    """The exact line of the first invalid UTF-8 byte (a text stream decodes in chunks and cannot say)."""
    with source.open() as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return _encoding_problem(f"Line {line_no}", exc)
    return Problem(DATASET_ENCODING, f"{source.name} is not valid UTF-8.", _UTF8_HINT)


def _csv_header(values: list[str], line: int) -> list[str] | Problem:
    header = [value.strip() for value in values]
    where = f"CSV header (line {line})"
    hint = "The first line of a CSV file names its columns, e.g. prompt,completion. " + SHAPES_HINT
    if any(not name for name in header):
        return Problem(DATASET_BAD_HEADER, f"{where} has an empty column name.", hint)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            return Problem(DATASET_BAD_HEADER, f"{where} names column '{name}' twice.", hint)
        seen.add(name)
    return header


class _CsvRecords:
    """(values, first line) of each record, and the line where the record being read starts (for csv errors).

    From a cut sample the last record is held back: it may be the start of a record whose quoted line breaks
    go on past the sample."""

    def __init__(self, reader, lines: BoundedLines, cut: bool):
        self.reader, self.lines, self.cut, self.start = reader, lines, cut, 1

    def __iter__(self):
        pending = None
        for values in self.reader:
            self.lines.record_read()
            record = (values, self.start)
            self.start = self.reader.line_num + 1
            if not self.cut:
                yield record
                continue
            if pending is not None:
                yield pending
            pending = record


def _values_size(values: list[str], limit: int) -> int:
    """UTF-8 bytes of a CSV record's values and the commas between them (its quoting not counted)."""
    chars = sum(len(value) for value in values) + len(values) - 1
    if chars * 4 <= limit:
        return chars
    return sum(len(value.encode("utf-8", "surrogatepass")) for value in values) + len(values) - 1


def _read_csv(
    source: _Source, checker: RowChecker, max_rows: int | None, max_row_bytes: int, row_limit: int | None
) -> None:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with source.open() as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
        lines = BoundedLines(fh, max_row_bytes)  # characters: never more than the bytes they are written in
        reader = csv.reader(lines)
        header: list[str] | None = None
        records = _CsvRecords(reader, lines, source.cut)
        row = 0
        try:
            for values, line in records:
                if not values:
                    continue
                if header is None:
                    parsed = _csv_header(values, line)
                    if isinstance(parsed, Problem):
                        checker.problem(parsed, fatal=True)
                        return
                    header = parsed
                    continue
                if max_rows is not None and row >= max_rows:
                    checker.sample_ended = True
                    return
                if _past_row_limit(checker, source, row, row_limit):
                    return
                row += 1
                ref = RowRef(row, line)
                if (size := _values_size(values, max_row_bytes)) > max_row_bytes:
                    checker.problem(row_too_large(ref, size, max_row_bytes))
                elif len(values) != len(header):
                    checker.problem(
                        Problem(
                            DATASET_BAD_ROW,
                            f"{ref}: has {len(values)} values but the header has {len(header)} columns.",
                            'Quote values that contain commas, quotes or line breaks ("a, b"), '
                            "and give every row one value per column.",
                        )
                    )
                else:
                    checker.add(ref, dict(zip(header, values, strict=True)))
                if checker.stopped:
                    return
        except UnicodeDecodeError:
            checker.problem(_first_bad_utf8_line(source), fatal=True)
        except RecordTooLong as long:
            ref = RowRef(row + 1, records.start)
            checker.problem(row_too_large(ref, long.size, max_row_bytes, at_least=True), fatal=True)
        except csv.Error as exc:
            checker.problem(
                Problem(
                    DATASET_BAD_ROW,
                    f"Row {row + 1} (line {records.start}): unreadable CSV: {exc}.",
                    "Fix the quoting there.",
                ),
                fatal=True,
            )
    if header is not None and row == 0 and not checker.collector.problems and not checker.sample_ended:
        raise DatasetError(
            [
                Problem(
                    DATASET_EMPTY, f"{source.name} has a header but no rows.", "Add at least one row under the header."
                )
            ]
        )


_READERS = {"jsonl": _read_jsonl, "json": _read_json_array, "csv": _read_csv}


def load_dataset(
    path: str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
    sample: Sample | None = None,
    file: BinaryIO | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    row_limit: int | None = None,
    keep: int | None = None,
    sink: Callable[[RowRef, dict], bool | None] | None = None,
) -> LoadedDataset:
    """Read and check every row of a dataset file, or only the rows within `sample` (then `complete` says whether
    that was the whole file). Reads `file` (the dataset opened by open_dataset) when given, else opens `path`
    (already resolved) the same way. A row longer than `max_row_bytes` in the file is a problem, never decoded; so
    is a file of more than `row_limit` rows: counted without parsing them (row_count.rows_past) before a full read
    and past a sample's, else the reader stops at the first row past the limit (a JSON array).
    Keeps every good row, or the first `keep`; `sink` (formats.RowChecker) sees each good row as it is read, and
    ends the reading early by answering True (`complete` is then False).
    Raises DatasetError carrying Problem objects."""
    path = Path(path)
    checker = RowChecker(max_errors, keep=keep, sink=sink)
    try:
        if file is None:
            with open_dataset(path) as opened:
                return _load(path, opened, checker, max_bytes, sample, max_row_bytes, row_limit)
        return _load(path, file, checker, max_bytes, sample, max_row_bytes, row_limit)
    except OSError as exc:
        raise DatasetError(
            [
                Problem(
                    DATASET_UNREADABLE,
                    f"Cannot read dataset {path}: {exc.strerror or exc}.",
                    f"Check the file's permissions: ls -la {path}",
                )
            ]
        ) from None


def _load(
    path: Path,
    file: BinaryIO,
    checker: RowChecker,
    max_bytes: int,
    sample: Sample | None,
    max_row_bytes: int,
    row_limit: int | None,
) -> LoadedDataset:
    size = os.fstat(file.fileno()).st_size
    if size > max_bytes:
        raise DatasetError(
            [
                Problem(
                    DATASET_TOO_LARGE,
                    f"{path.name} is {human_bytes(size)}; the limit is {human_bytes(max_bytes)}.",
                    "Use a smaller dataset or split it; a sample of it is enough to check a training setup.",
                )
            ]
        )
    kind, warnings = sniff_kind(path, file)
    if sample is None and row_limit is not None and _counted_past(file, kind, row_limit, max_row_bytes):
        raise DatasetError([too_many_rows(path.name, row_limit)])  # counted before a row is parsed or tokenized
    source = _Source.of(path.name, file, sample, max_row_bytes)
    _READERS[kind](source, checker, sample.rows if sample else None, max_row_bytes, row_limit)
    checker.sample_ended = checker.sample_ended or source.cut
    # A sample's read counts the rest of the file's rows without parsing them: a request's read stays bounded.
    sample_past_limit = checker.sample_ended and row_limit is not None and not checker.fatal
    if sample_past_limit and rows_past(file, kind, row_limit, max_row_bytes):
        checker.problem(too_many_rows(path.name, row_limit), fatal=True)
    if checker.sample_ended and checker.format is None and not checker.collector.problems:
        return LoadedDataset(
            rows=[], format="", kind=kind, warnings=[*warnings, _no_row_in_sample(path, sample)], complete=False
        )
    rows, fmt = checker.finish(empty_message=f"{path.name} has no rows.")
    ignored = sorted(checker.ignored)
    if ignored:
        warnings.append(
            Problem(
                "dataset_ignored_keys",
                f"Ignored column{'s' if len(ignored) > 1 else ''} {named_list(ignored)}: "
                f"not part of the '{fmt}' row shape.",
                "Training uses only the fields of the detected shape; remove the others if they were meant to matter.",
            )
        )
    return LoadedDataset(
        rows=rows,
        format=fmt,
        kind=kind,
        warnings=warnings,
        ignored_keys=ignored,
        complete=not (checker.sample_ended or checker.halted),
        count=checker.count,
    )


def _counted_past(file: BinaryIO, kind: str, row_limit: int, max_row_bytes: int) -> bool | None:
    """Whether the file has more than `row_limit` rows, counted without parsing them; for a worker's full read."""
    if kind == "json":
        return json_rows_past(file, row_limit)
    return rows_past(file, kind, row_limit, max_row_bytes)


def json_rows_past(file: BinaryIO, row_limit: int) -> bool | None:
    """Whether the JSON array in the opened dataset file has more than `row_limit` rows, counted without decoding a
    row (row_count.json_array_rows_past). A pass over the whole file: for a worker. None when not known: the file is
    too large to be read as an array (the reader refuses it) or is not an array."""
    if os.fstat(file.fileno()).st_size > MAX_JSON_ARRAY_BYTES:
        return None
    return json_array_rows_past(file, row_limit)


def _no_row_in_sample(path: Path, sample: Sample | None) -> Problem:
    read = human_bytes(sample.bytes) if sample else "part"
    return Problem(
        "dataset_sample_without_rows",
        f"The first {read} of {path.name} hold no complete row, so its format and rows are not shown here.",
        "Its rows are read and checked in full when a run starts; rows that long are usually a mistake in the file.",
    )


def load_rows(
    path: str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    max_rows: int | None = None,
) -> list[dict]:
    """The checked rows of a dataset file the portal made itself (a run's snapshot), so its path is resolved
    here; raises DatasetError (row numbers are 1-based, with file lines), dataset_too_many_rows for a file of more
    than `max_rows` rows (None: any number), counted before a row is parsed."""
    path = os.path.realpath(path)
    return load_dataset(
        path, max_bytes=max_bytes, max_errors=max_errors, max_row_bytes=max_row_bytes, row_limit=max_rows
    ).rows
