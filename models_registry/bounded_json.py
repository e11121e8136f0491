"""Reading a JSON file of a model folder in the web process only while parsing it is cheap.

Parsed JSON costs far more memory than its text: '[],' is three bytes and a Python list about sixty, so 64 MiB of
nested empty lists becomes well over a gigabyte, and json.loads holds the GIL the whole time. A file is parsed here
only when it is small (`limit`, which the caller picks by kind) and holds few values (MAX_PIECES commas and
brackets, counted in its bytes before parsing). A larger one is not read past its first and last bytes, which still
show a file that cannot be a JSON object; its contents are left to transformers, which reads them on a worker in a
child process with memory and CPU limits (models_registry/deep_verdict.py).

Results are kept by the file's identity (device, inode, size, modification and change times), so a file that does
not change is read once per process. Parsed values are shared between callers: treat them as read-only.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from models_registry.regular_files import open_regular
from mtm.shared.problems import Problem

CHECKED_ON_WORKER = "checked_on_worker"

# Parsed whole in the web process up to this size (config.json, tokenizer_config.json, indexes...). Real ones are a
# few KiB to a few hundred; the Hub's largest tokenizer_config.json files are near 1 MiB.
MAX_PARSED_BYTES = 4 * 1024 * 1024
# tokenizer.json holds the whole vocabulary (several MiB for any real model): only a toy one is parsed here.
MAX_PARSED_TOKENIZER_BYTES = 1024 * 1024
# Values a file may hold to be parsed here: each comma or bracket is at most one value, and a value ~100 bytes.
MAX_PIECES = 200_000
# A safetensors header (JSON at the file's start) past this is left to the worker: a model's is well under 1 MiB.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# How much of a larger file's start and end is read to see that it can be a JSON object.
EDGE_BYTES = 4096
# The kept results: at most this many, holding parsed values of at most this many bytes of text in all.
KEPT_FILES = 256
KEPT_TEXT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class JsonRead:
    """What reading one JSON file gave: its value, or why it is not usable JSON, or that it was not parsed here."""

    value: object = None
    problem: str | None = None  # "is not valid JSON (...)": completes "Model format invalid: <file> ..."
    deferred: bool = False  # too large or too many values to parse here: transformers reads it on a worker
    size: int = 0

    @property
    def parsed(self) -> bool:
        return self.problem is None and not self.deferred


_kept: OrderedDict[tuple, JsonRead] = OrderedDict()
_kept_text = 0
_kept_lock = threading.Lock()


def read_json(path: str | os.PathLike, limit: int = MAX_PARSED_BYTES) -> JsonRead:
    """The regular file `path` as JSON when it is at most `limit` bytes and MAX_PIECES values; else deferred, unless
    its first or last byte shows it is no JSON object. Raises what open_regular raises (NotRegularFile, OSError)."""
    fd = open_regular(path)
    try:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, limit)
        with _kept_lock:
            if (kept := _kept.get(key)) is not None:
                _kept.move_to_end(key)
                return kept
        result = _parse(fd, info.st_size, limit) if info.st_size <= limit else _edges(fd, info.st_size)
    finally:
        os.close(fd)
    _keep(key, result)
    return result


def _read_exactly(fd: int, offset: int, count: int) -> bytes:
    chunks, done = [], 0
    while done < count:
        chunk = os.pread(fd, count - done, offset + done)
        if not chunk:
            break
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


def _parse(fd: int, size: int, limit: int) -> JsonRead:
    raw = _read_exactly(fd, 0, min(size, limit) + 1)  # one byte more shows a file that grew since fstat
    if len(raw) > limit:
        return _edges(fd, len(raw))
    return parse_bytes(raw, limit)


def parse_bytes(raw: bytes, limit: int = MAX_PARSED_BYTES) -> JsonRead:
    """`raw` (a file's text, already read) as JSON, under the same bounds as read_json; deferred beyond them."""
    if len(raw) > limit or raw.count(b",") + raw.count(b"[") + raw.count(b"{") > MAX_PIECES:
        return JsonRead(deferred=True, size=len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JsonRead(problem=f"is not UTF-8 text (byte {exc.start})", size=len(raw))
    try:
        return JsonRead(value=json.loads(text), size=len(raw))
    except json.JSONDecodeError as exc:
        return JsonRead(
            problem=f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", size=len(raw)
        )
    except RecursionError:  # thousands of nested brackets: no configuration nests like that
        return JsonRead(problem="is not valid JSON (nested too deeply to parse)", size=len(raw))
    except ValueError as exc:  # an integer past Python's digit limit (4,300) raises a plain ValueError
        return JsonRead(problem=f"is not valid JSON here ({exc})", size=len(raw))


def _edges(fd: int, size: int) -> JsonRead:
    """A file too large to parse here: only its first and last bytes are read, to refuse what is no JSON object."""
    head = _read_exactly(fd, 0, EDGE_BYTES).lstrip()
    tail = _read_exactly(fd, max(0, size - EDGE_BYTES), EDGE_BYTES).rstrip()
    if not head.startswith(b"{"):
        return JsonRead(problem="is not a JSON object (its first character is not '{')", size=size)
    if not tail.endswith(b"}"):
        return JsonRead(problem="is not valid JSON (it does not end with '}': cut short?)", size=size)
    return JsonRead(deferred=True, size=size)


def _keep(key: tuple, result: JsonRead) -> None:
    global _kept_text
    text = result.size if result.parsed else 0
    if text > KEPT_TEXT_BYTES:
        return
    with _kept_lock:
        if key in _kept:
            return
        _kept[key] = result
        _kept_text += text
        while len(_kept) > KEPT_FILES or _kept_text > KEPT_TEXT_BYTES:
            _, dropped = _kept.popitem(last=False)
            _kept_text -= dropped.size if dropped.parsed else 0


def forget() -> None:
    """Drop every kept result (the next read of each file parses it again)."""
    global _kept_text
    with _kept_lock:
        _kept.clear()
        _kept_text = 0


def shown_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KiB"


def checked_on_worker(what: str, size: int) -> Problem:
    """The warning for a file (or part of one) left to transformers: where its contents are checked instead."""
    return Problem(
        CHECKED_ON_WORKER,
        f"{what} ({shown_size(size)}) is too large to read in this request: its contents are checked by "
        "transformers on a worker (transformers' verdict), not by the instant rules.",
        "Nothing to do: the model's verdict includes it once a worker has checked the model.",
    )
