"""Running a model's chat template in a child process with CPU-time and memory limits.

A chat template is Jinja code that comes with a model: anyone who downloads a model brings one in, and one can loop
for minutes or build strings of gigabytes. The web process renders templates only through `run_limited`, in a forked
child that the kernel stops once it exceeds the limits; the parent sees a TemplateLimitExceeded instead.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
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


def _child(work: Callable[[], Any], limits: TemplateLimits, conn) -> None:
    # The limits count from what the child inherited: a fork shares the parent's address space (and its size).
    memory = _address_space_bytes() + limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    try:
        result = ("ok", work())
    except MemoryError:
        result = ("memory", None)
    except BaseException as exc:  # noqa: BLE001 - the child reports everything to the parent
        result = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(result)
    except MemoryError:
        conn.send(("memory", None))
    conn.close()


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
    """work() run in a forked child under `limits`; its result must be picklable. Raises TemplateLimitExceeded
    (naming `model`) when the child runs out of CPU time or memory, RuntimeError when it fails otherwise."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(work, limits, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(limits.cpu_seconds * _WALL_FACTOR + 5):
            raise TemplateLimitExceeded(_too_slow(model, limits))
        kind, value = receive.recv()
    except EOFError:  # the child died without answering: the kernel stopped it
        child.join(5)
        if child.exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise TemplateLimitExceeded(_too_slow(model, limits)) from None
        raise TemplateLimitExceeded(too_large(model, limits)) from None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)
    if kind == "memory":
        raise TemplateLimitExceeded(too_large(model, limits))
    if kind == "error":
        raise RuntimeError(value)
    return value
