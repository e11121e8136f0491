"""Running a model's chat template in a child process with CPU-time and memory limits.

A chat template is Jinja code that comes with a model: anyone who downloads a model brings one in, and one can loop
for minutes or build strings of gigabytes. The web process and the worker's resolve stage render templates only
through `run_limited`, in a forked child that the kernel stops once it exceeds the limits; the caller sees a
TemplateLimitExceeded instead. (The trainer renders in its own child process, which the worker supervises.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from mtm.shared import limited_child
from mtm.shared.limited_child import LimitExceeded, Limits
from mtm.shared.problems import Problem

CHAT_TEMPLATE_TOO_SLOW = "chat_template_too_slow"
CHAT_TEMPLATE_TOO_LARGE = "chat_template_too_large"
TEMPLATE_LIMIT_CODES = (CHAT_TEMPLATE_TOO_SLOW, CHAT_TEMPLATE_TOO_LARGE)


class TemplateLimits(Limits):
    @classmethod
    def from_settings(cls) -> TemplateLimits:
        return cls(cpu_seconds=settings.MTM_TEMPLATE_CPU_SECONDS, memory_mb=settings.MTM_TEMPLATE_MEMORY_MB)


class TemplateLimitExceeded(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def _too_slow(model: str, limits: Limits) -> Problem:
    return Problem(
        CHAT_TEMPLATE_TOO_SLOW,
        f"The chat template of model {model} took more than {limits.cpu_seconds} s of CPU time to render the "
        "dataset's conversations, so it was stopped.",
        "The template loops far more than a chat template needs to: fix or replace the chat_template in the "
        "model's tokenizer_config.json (or chat_template.jinja), or choose another model.",
    )


def too_large(model: str, limits: Limits | None) -> Problem:
    needed = f"more than {limits.memory_mb} MB of memory" if limits else "far more memory than the text it renders"
    return Problem(
        CHAT_TEMPLATE_TOO_LARGE,
        f"The chat template of model {model} needed {needed} to render the dataset's conversations, so it was stopped.",
        "The template builds far more text than the conversations hold: fix or replace the chat_template in the "
        "model's tokenizer_config.json (or chat_template.jinja), or choose another model.",
    )


def run_limited(work: Callable[[], Any], limits: Limits, model: str) -> Any:
    """work() run in a limited child (mtm.shared.limited_child); TemplateLimitExceeded names `model` when it passes
    a limit, RuntimeError when it fails otherwise."""
    try:
        return limited_child.run_limited(work, limits)
    except LimitExceeded as exc:
        problem = _too_slow(model, limits) if exc.kind == limited_child.CPU else too_large(model, limits)
        raise TemplateLimitExceeded(problem) from None
