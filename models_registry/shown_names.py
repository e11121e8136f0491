"""Listed models as a page, the API and the database can show them (see name_bytes): a repo folder named with bytes
that is not UTF-8 is never a valid model name (names.name_error), so its row only needs to read sensibly."""

from __future__ import annotations

from models_registry.listed import ListedModel
from models_registry.name_bytes import encodes, not_utf8_problem, problem_encodes, storable_or_none, storable_problem
from mtm.shared.text import storable


def shown(models: list[ListedModel]) -> list[ListedModel]:
    """`models` with every name and message a page can render; rows already so are returned as they are."""
    return [shown_model(model) for model in models]


def shown_model(model: ListedModel) -> ListedModel:
    """One listed model as `shown` gives it."""
    texts = (model.model_name, model.path or "", model.revision or "")
    if all(map(encodes, texts)) and all(problem_encodes(p) for p in (*model.errors, *model.warnings)):
        return model
    return model.model_copy(
        update={
            "model_name": storable(model.model_name),
            "path": storable_or_none(model.path),
            "revision": storable_or_none(model.revision),
            "errors": [storable_problem(p) for p in model.errors] or [not_utf8_problem("name", model.path or "", None)],
            "warnings": [storable_problem(p) for p in model.warnings],
        }
    )
