"""The failures the trainer knows how to explain (each carries the code, message and hint of a Problem), and how the
trainer child's exit status reads: the supervisor and the ranks' launcher both tell a cancel from a failure by it."""

from __future__ import annotations

from mtm.shared.problems import Problem

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3


class TrainerError(Exception):
    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    @classmethod
    def from_problems(cls, problems: list[Problem]) -> TrainerError:
        """One error for several problems: the first one's code, every message, every distinct hint."""
        hints = list(dict.fromkeys(p.hint for p in problems if p.hint))
        return cls(problems[0].code, " ".join(p.message for p in problems), " ".join(hints))
