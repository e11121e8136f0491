"""Listed models as a page, the API and the database can show them.

A cache folder's name is whatever bytes its maker chose; Python reads bytes that are not UTF-8 as lone surrogates,
which no page, JSON answer or database can hold. Such a name is never a valid model name (names.name_error), so
its row only needs to read sensibly: each lone surrogate in the name and in the row's messages becomes U+FFFD.
"""

from __future__ import annotations

from dataclasses import replace

from models_registry.repo_scan import ListedModel
from mtm.shared.problems import Problem
from mtm.shared.text import storable


def shown(models: list[ListedModel]) -> list[ListedModel]:
    """`models` with every name and message a page can render; rows already so are returned as they are."""
    return [_shown(model) for model in models]


def _shown(model: ListedModel) -> ListedModel:
    if _encodes(model.model_name) and all(_problem_encodes(p) for p in (*model.errors, *model.warnings)):
        return model
    return replace(
        model,
        model_name=storable(model.model_name),
        errors=[_storable_problem(p) for p in model.errors],
        warnings=[_storable_problem(p) for p in model.warnings],
    )


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _problem_encodes(problem: Problem) -> bool:
    return _encodes(problem.message) and _encodes(problem.hint)


def _storable_problem(problem: Problem) -> Problem:
    return Problem(problem.code, storable(problem.message), storable(problem.hint))
