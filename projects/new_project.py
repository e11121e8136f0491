"""What a new project's form starts with, so that a new member's first run takes a couple of minutes: the model
picked on its page ("Train this model"), an output directory of its own inside the allowed root, and the
quick-check preset when asked for."""

from __future__ import annotations

import os
import re
from typing import Any

from django.http import QueryDict

from models_registry.services import dataset_roots, output_roots
from projects.hyperparameters import QUICK_CHECK
from projects.models import TrainingProject
from projects.sample_dataset import find_sample_dataset

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
    """Changes to a new form's defaults from its address: ?model=&revision= from a model's page, ?preset=quick,
    ?dataset=sample (the sample dataset, when it is under an allowed dataset root)."""
    values: dict[str, Any] = {}
    model = query.get("model", "")[:MAX_QUERY_TEXT].strip()
    if model:
        values["model_name"] = model
        values["revision"] = query.get("revision", "")[:MAX_QUERY_TEXT].strip()
    values["output_directory"] = free_output_directory(_folder_name(model) if model else "my-project")
    if query.get("preset") == "quick":
        values.update(QUICK_CHECK)
    if query.get("dataset") == "sample" and (sample := find_sample_dataset(dataset_roots())) is not None:
        values["dataset_path"] = str(sample)
    return values


def starting_links(query: QueryDict) -> dict[str, str]:
    """The new form's own address with the quick-check preset, and with the sample dataset (when there is one),
    each keeping what the address already chose."""
    links = {}
    for key, value in (("preset", "quick"), ("dataset", "sample")):
        if key == "dataset" and find_sample_dataset(dataset_roots()) is None:
            continue
        changed = query.copy()
        changed[key] = value
        kept = {k: changed[k][:MAX_QUERY_TEXT] for k in ("model", "revision", "preset", "dataset") if changed.get(k)}
        encoded = QueryDict(mutable=True)
        encoded.update(kept)
        links[key] = "?" + encoded.urlencode()
    return links
