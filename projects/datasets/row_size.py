"""How long one row of a dataset may be, and reading lines without ever holding one longer than that.

A row far longer than any sequence the trainer keeps is only cost: tokenizing a 100 MB row takes minutes and many
gigabytes before truncation throws nearly all of it away. Every reader refuses such a row by its size in the file,
before it is decoded into values or tokenized, and names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, TextIO

from mtm.shared.problems import Problem
from projects.datasets.errors import DATASET_ROW_TOO_LARGE, RowRef, human_bytes

# The longest max_seq_length the portal accepts is 131,072 tokens; 8 bytes a token (twice what English or code
# takes in UTF-8, and room for JSON-escaped non-Latin text) gives 1 MiB. Rows longer than max_seq_length are cut
# anyway, so a real SFT row is far below this. The worker's setting MTM_DATASET_MAX_ROW_BYTES overrides it.
DEFAULT_MAX_ROW_BYTES = 131_072 * 8
_SKIP_CHUNK = 1024 * 1024


def row_too_large(ref: RowRef, size: int, limit: int, *, at_least: bool = False) -> Problem:
    """`at_least`: only the start of the row was read (a sample ended inside it), and that is already too long."""
    more = " or more" if at_least else ""
    return Problem(
        DATASET_ROW_TOO_LARGE,
        f"{ref} is {size:,} bytes{more}; one row may be at most {limit:,} bytes ({human_bytes(limit)}), so it was "
        "not read or tokenized.",
        "Shorten, split or remove that row: training keeps at most max_seq_length tokens of a row and cuts the "
        "rest. Rows this long are usually a mistake in the file; if they are meant, ask the administrator to raise "
        "MTM_DATASET_MAX_ROW_BYTES.",
    )


def line_size(raw: bytes) -> int:
    """Bytes of a line without its line break."""
    if raw.endswith(b"\r\n"):
        return len(raw) - 2
    return len(raw) - 1 if raw.endswith(b"\n") else len(raw)


def bounded_lines(file: BinaryIO, limit: int) -> Iterator[tuple[bytes | None, int, bool]]:
    """(line, size, ended) for each line of `file`: the line with its line break, its size without it, and whether
    it ended with a line break. A line over `limit` bytes comes as None: it is passed over in chunks, never held
    whole, and `size` counts it to its end (or the file's)."""
    while raw := file.readline(limit + 2):
        ended = raw.endswith(b"\n")
        if ended or len(raw) <= limit + 1:  # a whole line, or the file's last one
            size = line_size(raw)
            yield (raw if size <= limit else None), size, ended
            continue
        size, last = len(raw), raw
        while chunk := file.readline(_SKIP_CHUNK):
            if chunk.endswith(b"\n"):
                ended = True
                size += line_size(chunk)
                if chunk == b"\n" and last.endswith(b"\r"):  # a \r\n split between two reads
                    size -= 1
                break
            size, last = size + len(chunk), chunk
        yield None, size, ended


def text_size(text: str, start: int, end: int, limit: int) -> int:
    """UTF-8 bytes of text[start:end] when they might pass `limit`; otherwise its characters (no more than `limit`
    either way: a character is at most 4 bytes)."""
    if (end - start) * 4 <= limit:
        return end - start
    return len(text[start:end].encode("utf-8", "surrogatepass"))


class RecordTooLong(Exception):
    """A CSV record longer than a row may be, stopped while it was read (`size`: the characters read of it)."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


class BoundedLines:
    """The text lines csv.reader reads, at most `limit` characters for the record being read: a record (or one
    line) longer than that raises RecordTooLong before it is assembled. record_read() starts the next record."""

    def __init__(self, fh: TextIO, limit: int):
        self.fh, self.limit, self.used = fh, limit, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.fh.readline(max(1, self.limit + 1 - self.used))
        if not line:
            raise StopIteration
        self.used += len(line)
        if self.used > self.limit:
            raise RecordTooLong(self.used)
        return line

    def record_read(self) -> None:
        self.used = 0
