"""Names read from disk that may not be UTF-8, and the text that carries them.

A name on disk (a repo folder, a snapshot folder, a file in a snapshot, a folder a link leads to) is whatever bytes
its maker chose; Python reads bytes that are not UTF-8 as lone surrogates, which no page, JSON answer or database
can hold. A snapshot or file so named makes its model invalid (`not_utf8_problem`, raised where the name is read); a
project's path that resolves to such a name is refused (`path_not_utf8_problem`); text that still carries such a
name only needs to read sensibly: each lone surrogate becomes U+FFFD (mtm.shared.text.storable).
"""

from __future__ import annotations

from mtm.shared.problems import Problem
from mtm.shared.text import storable


def encodes(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def not_utf8_problem(what: str, where: str, model_name: str | None) -> Problem:
    """The problem of a `what` ("snapshot folder", "file") at `where` whose name is not UTF-8."""
    fix = f"hf download {model_name}" if model_name else "download the model again"
    return Problem(
        "name_not_utf8",
        f"Model format invalid: a {what} in it is named with bytes that are not UTF-8 ({storable(where)}); "
        "no page or training run can use it.",
        f"Rename or remove it, then if need be: {fix}",
    )


def path_not_utf8_problem(what: str, given: str, real: str) -> Problem:
    """The problem of a path a member gave (`what`: "Dataset path", "Output directory") whose resolved form `real`
    holds a name that is not UTF-8: the path itself, or a link on it, leads to such a folder or file."""
    shown = storable(given) if given == real else f"{storable(given)} (resolves to {storable(real)})"
    return Problem(
        "name_not_utf8",
        f"{what} {shown} leads to a folder or file named with bytes that are not UTF-8 (shown as \ufffd): no page, "
        "database or training run can hold its path.",
        "Rename that folder or file to a UTF-8 name (or point the link at one), or give a path that does not go "
        "through it.",
    )


def problem_encodes(problem: Problem) -> bool:
    return encodes(problem.message) and encodes(problem.hint)


def storable_problem(problem: Problem) -> Problem:
    return Problem(problem.code, storable(problem.message), storable(problem.hint))


def storable_or_none(text: str | None) -> str | None:
    return None if text is None else storable(text)
