"""A resolution as a page, the API and the database can show it (see name_bytes)."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from models_registry.name_bytes import encodes, not_utf8_problem, problem_encodes, storable_or_none, storable_problem
from mtm.shared.text import storable

R = TypeVar("R")  # resolution.Resolution, which imports this module


def shown_resolution(result: R) -> R:
    """`result` with every name and message a page can render. A path, revision or file name that is not UTF-8
    cannot be used (nothing could open it by its shown name), so the resolution is then invalid and unread."""
    names = (result.path or "", result.revision or "", *(f.name for f in result.files))
    messages = (result.model_name, *result.searched)
    unusable = not all(map(encodes, names))
    problems = (*result.errors, *result.warnings)
    if not unusable and all(map(encodes, messages)) and all(map(problem_encodes, problems)):
        return result
    errors = [storable_problem(p) for p in result.errors]
    if unusable and not any(p.code == "name_not_utf8" for p in errors):
        errors.append(not_utf8_problem("file or folder", result.path or "", result.model_name))
    return result.model_copy(
        update={
            "model_name": storable(result.model_name),
            "path": storable_or_none(result.path),
            "revision": storable_or_none(result.revision),
            "files": [replace(f, name=storable(f.name)) for f in result.files],
            "errors": errors,
            "warnings": [storable_problem(p) for p in result.warnings],
            "searched": [storable(s) for s in result.searched],
            "unread": result.unread or unusable,
        }
    )
