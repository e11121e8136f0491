"""What a new project's form starts with, so that a new member's first run takes a couple of minutes: the model
picked on its page ("Train this model"), an output directory of its own inside the allowed root, and the
quick-check preset when asked for."""

from __future__ import annotations

import os
import re
from typing import Any

from django.http import QueryDict

from models_registry.lookup import dataset_roots, output_roots
from projects.datasets.samples import find_sample_dataset
from projects.hyperparameters import QUICK_CHECK
from projects.models import TrainingProject

MAX_QUERY_TEXT = 200
DEFAULT_FOLDER = "my-project"  # a new form's output folder before a name or model is given


def folder_name(text: str) -> str:
    """A folder name made of `text` (a project or model name): its last part, lowercase, safe characters only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text.rsplit("/", 1)[-1]).strip("-.")
    return name.lower()[:60] or "project"


def free_output_directory(base: str) -> str:
    """`<first allowed output root>/<base>`, numbered (-2, -3, …) past folders that exist or a project uses."""
    roots = output_roots()
    if not roots:
        return ""
    root = os.path.realpath(roots[0])
    used = set(TrainingProject.objects.values_list("output_directory", flat=True))
    candidate, number = os.path.join(root, base), 1
    while os.path.lexists(candidate) or candidate in used:
        number += 1
        candidate = os.path.join(root, f"{base}-{number}")
    return candidate


def followed_output_directory(name: str, typed: str, suggested: str) -> str | None:
    """The output directory a new form should hold once its name is `name`: a free folder named after it, while the
    box still holds the folder suggested last (`suggested`); None when the member changed it, or nothing changes."""
    typed = typed.strip()
    if typed != suggested.strip():
        return None
    folder = free_output_directory(folder_name(name) if name.strip() else DEFAULT_FOLDER)
    return folder if folder and folder != typed else None


def starting_values(query: QueryDict) -> dict[str, Any]:
    """Changes to a new form's defaults from its address: ?model=&revision= from a model's page, ?preset=quick,
    ?dataset=sample (the sample dataset, when it is under an allowed dataset root)."""
    values: dict[str, Any] = {}
    model = query.get("model", "")[:MAX_QUERY_TEXT].strip()
    if model:
        values["model_name"] = model
        values["revision"] = query.get("revision", "")[:MAX_QUERY_TEXT].strip()
    values["output_directory"] = values["output_suggested"] = free_output_directory(
        folder_name(model) if model else DEFAULT_FOLDER
    )
    if query.get("preset") == "quick":
        values.update(QUICK_CHECK)
    if query.get("dataset") == "sample" and (sample := find_sample_dataset(dataset_roots())) is not None:
        values["dataset_path"] = str(sample)
    return values


def sample_available() -> bool:
    return find_sample_dataset(dataset_roots()) is not None


STARTERS = ("quick", "sample")  # the form's "Use the quick-check preset" and "Use the sample dataset" buttons
MAX_TYPED_TEXT = 10_000


def starter_values(posted: QueryDict, starter: str, fields: dict[str, Any], initial: dict[str, Any]) -> dict[str, Any]:
    """A new form's values after a starter button: what the member typed so far (`posted`, the form as it was sent),
    then the preset or the sample dataset on top, so that choosing one never clears the others."""
    from django import forms

    values = dict(initial)
    for name, field in fields.items():
        if isinstance(field, forms.FileField):  # a chosen file was stored at once; the path box holds where
            continue
        if isinstance(field, forms.BooleanField):  # an unticked box is not sent
            values[name] = name in posted
        elif name in posted:
            values[name] = posted.get(name, "")[:MAX_TYPED_TEXT]
    if not str(values.get("output_directory") or "").strip():
        base = str(values.get("name") or values.get("model_name") or "")
        values["output_directory"] = values["output_suggested"] = free_output_directory(folder_name(base))
    if starter == "quick":
        values.update(QUICK_CHECK)
    if starter == "sample" and (sample := find_sample_dataset(dataset_roots())) is not None:
        values["dataset_path"] = str(sample)
    return values
