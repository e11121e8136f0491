"""The failures the trainer knows how to explain: each carries the code, message and hint of a Problem."""

from __future__ import annotations

from mtm.shared.problems import Problem


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

    def to_problem(self) -> Problem:
        return Problem(self.code, self.message, self.hint)
