"""How many rows a dataset may have, and counting the rows of a file past what a web request reads of it.

A row costs the worker the same whatever its size (a parsed row, a tokenizer call, its token count), so a file of
tiny rows costs far more than its bytes suggest: the number of rows is bounded as well as the bytes of each row.
The worker's full read stops at the first row past the bound. A request reads only the start of a file
(loading.Sample), so there the rest is counted without being parsed: first its line breaks, at the speed of
bytes.count; only a file with more lines than the bound is counted exactly: its lines with content (a JSON Lines row,
or a CSV record when the file has no quotes), and a CSV with quotes (where a record may span lines) through the csv
module, never holding more than one row. Memory stays at one chunk either way. The csv module is slow (a few MB a
second), so its count reads at most _CSV_EXACT_CHARS of the file: past them the answer is "not known here", as for a
JSON array, and the worker's full read stops at the first row past the bound.

A JSON array may hold all its rows on one line, so a request does not count them. A worker does
(json_array_rows_past), without decoding a row: its strings taken out, the commas between the array's own values
are counted by nesting depth, a pass at the speed of bytes operations over a file the reader holds whole anyway.
"""

from __future__ import annotations

import csv
import io
import os
from typing import BinaryIO

from mtm.shared.problems import Problem
from projects.datasets.errors import DATASET_TOO_MANY_ROWS
from projects.datasets.row_size import BoundedLines, RecordTooLong

_CHUNK = 256 * 1024
_BREAKS_CHUNK = 1024 * 1024
# Bytes a line of JSON Lines may hold and still be blank (the reader skips it): ASCII whitespace. A line of other
# (non-ASCII) spaces counts as a row here and is skipped by the reader: the count can only come out higher. In a CSV
# only an empty line is no record (a line of spaces is a row of one value).
_JSONL_BLANK = b" \t\r\x0b\x0c\x1c\x1d\x1e\x1f"
# Lines the exact CSV count reads at most for each row of the bound (a record may span lines: quoted line breaks).
_CSV_LINES_PER_ROW = 4
# Characters the exact CSV count parses at most (a fraction of a second of a web request's CPU).
_CSV_EXACT_CHARS = 1024 * 1024


def too_many_rows(name: str, limit: int) -> Problem:
    return Problem(
        DATASET_TOO_MANY_ROWS,
        f"{name} has more than {limit:,} rows, the most one dataset may have, so it was not read further.",
        f"Split it into files of at most {limit:,} rows (JSON Lines: split -l {limit} {name} part-) and train on "
        "one, or on a sample of it; if a run really needs more rows, ask staff to raise MTM_DATASET_MAX_ROWS.",
    )


def rows_past(file: BinaryIO, kind: str, limit: int, max_row_bytes: int) -> bool | None:
    """Whether the opened dataset file, read as `kind` ("jsonl", "csv" or "json"), has more than `limit` rows: True,
    False, or None when that is not known without reading it as the worker does (a JSON array; a CSV with quotes
    whose count stops at a problem the worker's read names, after 4 lines for each row of the bound, or after
    _CSV_EXACT_CHARS). Leaves the file's position anywhere."""
    if kind not in ("jsonl", "csv"):  # a JSON array may hold any number of rows on one line
        return None
    header = 1 if kind == "csv" else 0
    size = os.fstat(file.fileno()).st_size
    if (size + 1) // 2 <= limit + header:  # a row is a byte and a line break at least
        return False
    if _line_breaks(file, kind, limit + header) < limit + header:
        return False
    lines, quoted = _content_lines(file, kind, limit + header)
    if lines <= limit + header or not quoted:  # without quotes each CSV line with content is one record
        return lines > limit + header
    records = _csv_records(file, limit + header, max_row_bytes, (limit + header) * _CSV_LINES_PER_ROW)
    return None if records is None else records > limit + header


_JSON_KEPT = b'"[]{},'  # what the count looks at: string quotes, brackets and commas
_NOT_JSON_KEPT = bytes(sorted(set(range(256)) - set(_JSON_KEPT)))
_DEPTH_CHUNK = 4 * 1024 * 1024


def json_array_rows_past(file: BinaryIO, limit: int) -> bool | None:
    """Whether the JSON array in the opened file has more than `limit` values (rows), counted without decoding one:
    the commas outside strings right inside the outer brackets (nesting depth 1). None when the file does not start
    with an array. The whole file is read and held: for a worker, and for a file small enough to be read as an array
    (the reader's bound). A broken file may be miscounted; the reader names what is wrong with it."""
    import numpy  # a worker's import: the web process never counts an array's rows

    file.seek(0)
    # Escaped backslashes, then escaped quotes, go first: every quote left opens or closes a string.
    text = file.read().replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_JSON_KEPT)
    if not text.startswith(b"["):
        return None
    codes = numpy.frombuffer(text, dtype=numpy.uint8)
    quotes_before = depth = commas = 0
    for start in range(0, len(codes), _DEPTH_CHUNK):
        part = codes[start : start + _DEPTH_CHUNK]
        quotes = numpy.cumsum(part == ord('"'), dtype=numpy.int64) + quotes_before
        outside = (quotes & 1) == 0  # an even number of quotes so far: not inside a string
        opens = (part == ord("[")) | (part == ord("{"))
        closes = (part == ord("]")) | (part == ord("}"))
        level = numpy.cumsum((opens.astype(numpy.int64) - closes) * outside) + depth
        commas += int(numpy.count_nonzero((part == ord(",")) & outside & (level == 1)))
        if commas >= limit:  # `limit` commas part limit + 1 values (a comma more than values is broken JSON)
            return True
        quotes_before, depth = int(quotes[-1]), int(level[-1])
    return False


def _line_breaks(file: BinaryIO, kind: str, stop_above: int) -> int:
    """Line breaks in the file (a CSV's carriage returns too), counted until there are more than `stop_above`."""
    file.seek(0)
    buffer = bytearray(_BREAKS_CHUNK)  # read into, not allocated for each chunk: this pass reads the whole file
    breaks = 0
    while breaks <= stop_above and (size := file.readinto(buffer)):
        breaks += buffer.count(b"\n", 0, size)
        if kind == "csv":  # a \r\n cut between two chunks counts twice: never fewer breaks than there are
            breaks += buffer.count(b"\r", 0, size) - buffer.count(b"\r\n", 0, size)
    return breaks


def _content_lines(file: BinaryIO, kind: str, stop_above: int) -> tuple[int, bool]:
    """Lines of the file holding a row's bytes (JSON Lines: a byte other than spaces; CSV: any byte), counted until
    there are more than `stop_above`; and whether a CSV quote was seen on the way (a record may then span lines)."""
    file.seek(0)
    lines, quoted = 0, False
    counted = False  # the line the previous chunk ended inside is counted already
    while lines <= stop_above and (chunk := file.read(_CHUNK)):
        if kind == "csv":
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # the csv module ends lines at either
            quoted = quoted or b'"' in chunk
        else:
            chunk = chunk.translate(None, _JSONL_BLANK)
        if counted:
            start = chunk.find(b"\n") + 1
            if not start:
                continue
            chunk = chunk[start:]
        parts = chunk.split(b"\n")
        lines += len(parts) - parts.count(b"")
        counted = parts[-1] != b""
    return lines, quoted


def _csv_records(file: BinaryIO, stop_above: int, max_row_bytes: int, line_budget: int) -> int | None:
    """Records of a CSV file (its header one of them), counted until there are more than `stop_above`; None when
    reading stops first: a record longer than a row may be, unreadable CSV, more than `line_budget` lines or
    _CSV_EXACT_CHARS characters read."""
    csv.field_size_limit(max(csv.field_size_limit(), max_row_bytes + 1))  # as the reader raises it
    handle = os.fdopen(os.dup(file.fileno()), "rb")
    handle.seek(0)
    with io.TextIOWrapper(handle, encoding="utf-8-sig", errors="replace", newline="") as text:
        lines = _BudgetedLines(text, max_row_bytes, _CSV_EXACT_CHARS)
        reader = csv.reader(lines)
        records = 0
        try:
            for values in reader:
                lines.record_read()
                records += bool(values)
                if records > stop_above:
                    break
                if reader.line_num > line_budget:
                    return None
        except (RecordTooLong, csv.Error, _BudgetSpent):
            return None
    return records


class _BudgetSpent(Exception):
    """The exact count has read all the characters it may."""


class _BudgetedLines(BoundedLines):
    """BoundedLines that stops (_BudgetSpent) once more than `budget` characters are read in all."""

    def __init__(self, fh, limit: int, budget: int):
        super().__init__(fh, limit)
        self.left = budget

    def __next__(self) -> str:
        line = super().__next__()
        self.left -= len(line)
        if self.left < 0:
            raise _BudgetSpent
        return line
