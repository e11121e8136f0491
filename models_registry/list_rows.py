"""What each row of the Models page shows: the listed model, and the problems its Problems column lists, which are
those its Status column does not already say (transformers' reason is said there, once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from models_registry.listed import DONE, FAILED, ListedModel
from models_registry.owner_budget import NOT_CHECKED
from mtm.shared.problems import Problem


@dataclass
class ModelRow:
    model: ListedModel
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    linked: bool = True  # whether its name leads to a model page: not a row that stands for many repo folders


def _said_in_status(model: ListedModel) -> Problem | None:
    deep = model.deep
    if deep is None or deep.state not in (DONE, FAILED) or deep.valid:
        return None
    return deep.reason


def model_rows(models: list[ListedModel]) -> list[ModelRow]:
    rows = []
    for model in models:
        said = _said_in_status(model)
        errors = [p for p in model.errors if said is None or (p.code, p.message) != (said.code, said.message)]
        summary = any(p.code == NOT_CHECKED for p in model.errors)
        rows.append(ModelRow(model, errors, list(model.warnings), linked=not summary))
    return rows
