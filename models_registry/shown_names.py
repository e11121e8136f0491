"""Listed models and resolutions as a page, the API and the database can show them.

A name on disk (a repo folder, a snapshot folder, a file in a snapshot) is whatever bytes its maker chose; Python
reads bytes that are not UTF-8 as lone surrogates, which no page, JSON answer or database can hold. A snapshot or
file so named makes its model invalid (`not_utf8_problem`, raised where the name is read); whatever still carries
such a name then only needs to read sensibly: each lone surrogate becomes U+FFFD.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from mtm.shared.problems import Problem
from mtm.shared.text import storable

if TYPE_CHECKING:
    from models_registry.repo_scan import ListedModel
    from models_registry.resolution import Resolution


def not_utf8_problem(what: str, where: str, model_name: str | None) -> Problem:
    """The problem of a `what` ("snapshot folder", "file") at `where` whose name is not UTF-8."""
    fix = f"hf download {model_name}" if model_name else "download the model again"
    return Problem(
        "name_not_utf8",
        f"Model format invalid: a {what} in it is named with bytes that are not UTF-8 ({storable(where)}); "
        "no page or training run can use it.",
        f"Rename or remove it, then if need be: {fix}",
    )


def shown(models: list[ListedModel]) -> list[ListedModel]:
    """`models` with every name and message a page can render; rows already so are returned as they are."""
    return [shown_model(model) for model in models]


def shown_model(model: ListedModel) -> ListedModel:
    """One listed model as `shown` gives it."""
    texts = (model.model_name, model.path or "", model.revision or "")
    if all(map(encodes, texts)) and all(_problem_encodes(p) for p in (*model.errors, *model.warnings)):
        return model
    return replace(
        model,
        model_name=storable(model.model_name),
        path=_storable_or_none(model.path),
        revision=_storable_or_none(model.revision),
        errors=[_storable_problem(p) for p in model.errors] or [not_utf8_problem("name", model.path or "", None)],
        warnings=[_storable_problem(p) for p in model.warnings],
    )


def shown_resolution(result: Resolution) -> Resolution:
    """`result` with every name and message a page can render. A path, revision or file name that is not UTF-8
    cannot be used (nothing could open it by its shown name), so the resolution is then invalid and unread."""
    names = (result.path or "", result.revision or "", *(f.name for f in result.files))
    messages = (result.model_name, *result.searched)
    unusable = not all(map(encodes, names))
    problems = (*result.errors, *result.warnings)
    if not unusable and all(map(encodes, messages)) and all(map(_problem_encodes, problems)):
        return result
    errors = [_storable_problem(p) for p in result.errors]
    if unusable and not any(p.code == "name_not_utf8" for p in errors):
        errors.append(not_utf8_problem("file or folder", result.path or "", result.model_name))
    return replace(
        result,
        model_name=storable(result.model_name),
        path=_storable_or_none(result.path),
        revision=_storable_or_none(result.revision),
        files=[replace(f, name=storable(f.name)) for f in result.files],
        errors=errors,
        warnings=[_storable_problem(p) for p in result.warnings],
        searched=[storable(s) for s in result.searched],
        unread=result.unread or unusable,
    )


def _storable_or_none(text: str | None) -> str | None:
    return None if text is None else storable(text)


def encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _problem_encodes(problem: Problem) -> bool:
    return encodes(problem.message) and encodes(problem.hint)


def _storable_problem(problem: Problem) -> Problem:
    return Problem(problem.code, storable(problem.message), storable(problem.hint))
