"""What a new project's form starts with, so that a new member's first run takes a couple of minutes: the model
picked on its page ("Train this model"), an output directory of its own inside the allowed root, and the
quick-check preset when asked for."""

from __future__ import annotations

import os
import re
from typing import Any

from django.http import QueryDict

from models_registry.services import output_roots
from projects.hyperparameters import QUICK_CHECK
from projects.models import TrainingProject

MAX_QUERY_TEXT = 200


def _folder_name(text: str) -> str:
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


def starting_values(query: QueryDict) -> dict[str, Any]:
    """Changes to a new form's defaults from its address: ?model=&revision= from a model's page, ?preset=quick."""
    values: dict[str, Any] = {}
    model = query.get("model", "")[:MAX_QUERY_TEXT].strip()
    if model:
        values["model_name"] = model
        values["revision"] = query.get("revision", "")[:MAX_QUERY_TEXT].strip()
    values["output_directory"] = free_output_directory(_folder_name(model) if model else "my-project")
    if query.get("preset") == "quick":
        values.update(QUICK_CHECK)
    return values
