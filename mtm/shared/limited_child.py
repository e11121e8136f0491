"""Running a callable in a forked child that the kernel stops once it passes a CPU-time or memory limit.

For work on untrusted input that may loop or allocate without end (a model's chat template, a model's files read by
transformers): the caller gets LimitExceeded, saying which limit, and its own process is unaffected.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CPU = "cpu"
MEMORY = "memory"
# Past its CPU limit a child gets SIGXCPU; the wall-clock wait covers a child that sleeps or blocks instead.
_WALL_FACTOR = 3


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_mb: int


class LimitExceeded(Exception):
    """The child passed a limit: `kind` is CPU (or it hung past the wall-clock wait) or MEMORY (or it died without
    answering)."""

    def __init__(self, kind: str):
        super().__init__(f"the child process passed its {kind} limit")
        self.kind = kind


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def _child(work: Callable[[], Any], limits: Limits, out: int) -> None:
    # The limits count from what the child inherited: a fork shares the parent's address space (and its size).
    memory = _address_space_bytes() + limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    try:
        data = json.dumps(["ok", work()]).encode()
    except MemoryError:
        data = json.dumps(["memory", None]).encode()
    except BaseException as exc:  # noqa: BLE001 - the child reports everything to the parent
        data = json.dumps(["error", f"{type(exc).__name__}: {exc}"]).encode()
    with os.fdopen(out, "wb") as pipe:
        pipe.write(data)


def _read_all(fd: int, seconds: float) -> bytes | None:
    """Everything written to the pipe until the writer closes it, or None when that takes longer than `seconds`."""
    deadline = time.monotonic() + seconds
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run_limited(work: Callable[[], Any], limits: Limits) -> Any:
    """work() run in a forked child under `limits`; its result must be JSON (tuples come back as lists). Raises
    LimitExceeded when the child runs out of CPU time or memory, RuntimeError when it fails otherwise.

    A bare fork, not multiprocessing: a Celery worker's pool processes are daemons, which multiprocessing forbids
    to have children."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        status = 1
        try:
            os.close(read_end)
            _child(work, limits, write_end)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        data = _read_all(read_end, limits.cpu_seconds * _WALL_FACTOR + 5)
    finally:
        os.close(read_end)
        if data is None:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if data is None or os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL):
        raise LimitExceeded(CPU)
    if not data:  # the child died without answering, and not of its CPU limit: out of memory
        raise LimitExceeded(MEMORY)
    kind, value = json.loads(data)
    if kind == "memory":
        raise LimitExceeded(MEMORY)
    if kind == "error":
        raise RuntimeError(value)
    return value
