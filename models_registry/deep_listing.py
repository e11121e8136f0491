"""transformers' cached verdicts on the listed models, read for the whole list at once.

Two queries whatever the number of models (the cached verdicts, and which folders a worker is checking now) and
nothing computed: a verdict is shown for the folder it was made on, as the background fill
(models_registry.verdict_fill) keeps it current on the workers. Looking a model up (its page, the inline check,
Start) compares the fingerprint; the list, which must stay fast, does not walk every model's files to do so.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.db.models.fields.json import KT
from django.utils import timezone

from models_registry.deep_state import CHECK_FAILURES, REQUEST_STALE_AFTER, judgeable_only, merged_problems
from models_registry.listed import CHECKING, DONE, FAILED, UNCHECKED, ListedDeep, ListedModel
from models_registry.models import ModelVerdict, VerdictRequest
from mtm.shared.problems import Problem


def _problems(raw: str | None) -> list[Problem]:
    if not raw or raw == "[]":
        return []
    return [Problem(p["code"], p["message"], p.get("hint", "")) for p in json.loads(raw)]


def with_deep_states(models: list[ListedModel]) -> list[ListedModel]:
    """The listed models, each judgeable one with its deep state and, where a verdict is cached, its errors and
    warnings overridden by it. New objects: the listing's kept results are never changed."""
    folders = {model.path for model in models if judgeable_only(model)}
    if not folders:
        return models
    # Every row, unfiltered: an IN of thousands of keys costs more to build than the rows of other folders cost to
    # skip. Only the problems are read out of the JSON, and parsed only where there are any.
    rows = ModelVerdict.objects.values_list(
        "folder", "valid", KT("result__errors"), KT("result__warnings"), KT("result__checked_at")
    )
    verdicts = {row[0]: row[1:] for row in rows if row[0] in folders}
    since = timezone.now() - REQUEST_STALE_AFTER
    pending = set(VerdictRequest.objects.filter(requested_at__gt=since).values_list("folder", flat=True))
    shown = []
    for model in models:
        if model.path not in folders:
            shown.append(model)
            continue
        cached = verdicts.get(model.path)
        if model.path in pending:  # asked again (a file changed, or never checked): the old verdict is on its way out
            shown.append(model.model_copy(update={"deep": ListedDeep(state=CHECKING)}))
        elif cached is None:
            shown.append(model.model_copy(update={"deep": ListedDeep(state=UNCHECKED)}))
        else:
            valid, errors_json, warnings_json, checked_at = cached
            errors, warnings = _problems(errors_json), _problems(warnings_json)
            failed = bool(errors) and errors[0].code in CHECK_FAILURES
            deep = ListedDeep(
                state=FAILED if failed else DONE,
                valid=valid,
                errors=errors,
                warnings=warnings,
                checked_at=_when(checked_at),
            )
            errors, warnings = merged_problems(model.errors, model.warnings, valid, errors, warnings)
            shown.append(model.model_copy(update={"errors": errors, "warnings": warnings, "deep": deep}))
    return shown


def _when(raw: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def still_checking(models: list[ListedModel]) -> int:
    """How many of the listed models a worker is checking now (the list polls while there are any)."""
    return sum(1 for model in models if model.deep is not None and model.deep.state == CHECKING)


def unchecked(models: list[ListedModel]) -> list[ListedModel]:
    """The listed models no worker has checked or been asked about (the list asks for them by a POST)."""
    return [model for model in models if model.deep is not None and model.deep.state == UNCHECKED]
