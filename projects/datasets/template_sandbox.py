"""Running a model's chat template in a child process with CPU-time and memory limits.

A chat template is Jinja code that comes with a model: anyone who downloads a model brings one in, and one can loop
for minutes or build strings of gigabytes. The web process and the worker's resolve stage render templates only
through `run_limited`, in a forked child that the kernel stops once it exceeds the limits; the caller sees a
TemplateLimitExceeded instead. (The trainer renders in its own child process, which the worker supervises.)
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

from django.conf import settings

from mtm.shared.problems import Problem

CHAT_TEMPLATE_TOO_SLOW = "chat_template_too_slow"
CHAT_TEMPLATE_TOO_LARGE = "chat_template_too_large"
TEMPLATE_LIMIT_CODES = (CHAT_TEMPLATE_TOO_SLOW, CHAT_TEMPLATE_TOO_LARGE)
# Past its CPU limit a child gets SIGXCPU; the wall-clock wait covers a child that sleeps or blocks instead.
_WALL_FACTOR = 3


@dataclass(frozen=True)
class TemplateLimits:
    cpu_seconds: int
    memory_mb: int

    @classmethod
    def from_settings(cls) -> TemplateLimits:
        return cls(cpu_seconds=settings.MTM_TEMPLATE_CPU_SECONDS, memory_mb=settings.MTM_TEMPLATE_MEMORY_MB)


class TemplateLimitExceeded(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def _child(work: Callable[[], Any], limits: TemplateLimits, out: int) -> None:
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


def _too_slow(model: str, limits: TemplateLimits) -> Problem:
    return Problem(
        CHAT_TEMPLATE_TOO_SLOW,
        f"The chat template of model {model} took more than {limits.cpu_seconds} s of CPU time to render the "
        "dataset's conversations, so it was stopped.",
        "The template loops far more than a chat template needs to: fix or replace the chat_template in the "
        "model's tokenizer_config.json (or chat_template.jinja), or choose another model.",
    )


def too_large(model: str, limits: TemplateLimits | None) -> Problem:
    needed = f"more than {limits.memory_mb} MB of memory" if limits else "far more memory than the text it renders"
    return Problem(
        CHAT_TEMPLATE_TOO_LARGE,
        f"The chat template of model {model} needed {needed} to render the dataset's conversations, so it was stopped.",
        "The template builds far more text than the conversations hold: fix or replace the chat_template in the "
        "model's tokenizer_config.json (or chat_template.jinja), or choose another model.",
    )


def run_limited(work: Callable[[], Any], limits: TemplateLimits, model: str) -> Any:
    """work() run in a forked child under `limits`; its result must be JSON (tuples come back as lists). Raises TemplateLimitExceeded
    (naming `model`) when the child runs out of CPU time or memory, RuntimeError when it fails otherwise.

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
        raise TemplateLimitExceeded(_too_slow(model, limits))
    if not data:  # the child died without answering, and not of its CPU limit: out of memory
        raise TemplateLimitExceeded(too_large(model, limits))
    kind, value = json.loads(data)
    if kind == "memory":
        raise TemplateLimitExceeded(too_large(model, limits))
    if kind == "error":
        raise RuntimeError(value)
    return value
