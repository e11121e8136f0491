"""Checks for writes to the registry (overrides, portal settings): plain values in, Problems out.

Used by the override and settings services; the resolver itself decides whether an override's folder is a usable model.
"""

from __future__ import annotations

import os
from pathlib import Path

from models_registry.lookup import current_cache_dir
from models_registry.models import ModelOverride, PublishedModel
from models_registry.names import name_error
from models_registry.resolution import Resolution, resolve
from mtm.shared.problems import Problem

ROOT_HINT = "Give each root as a full path that starts with '/', e.g. /data/outputs."


def override_problems(model_name: str, path: str) -> list[Problem]:
    problems = []
    if problem := name_error(model_name):
        problems.append(problem)
    if not path.strip():
        problems.append(Problem("not_absolute", "The override's path is empty.", "Give the model folder's full path."))
    elif not os.path.isabs(path.strip()):
        problems.append(
            Problem(
                "not_absolute",
                f"The override's path '{path}' is not an absolute path.",
                "Give the model folder's full path on the server, e.g. /models/Llama-3.2-3B-Instruct.",
            )
        )
    return problems


def duplicate_override(model_name: str, exclude_pk: int | None = None) -> Problem | None:
    taken = ModelOverride.objects.filter(model_name=model_name).exclude(pk=exclude_pk).first()
    if taken is None:
        published = PublishedModel.objects.filter(model_name__iexact=model_name).first()
        if published is None:
            return None
        return Problem(
            "override_exists",
            f"'{published.model_name}' is the name of a model published from a run (project "
            f"'{published.project_name}'): an override would hide it from every project that trains on it.",
            "Choose another name, or have the published model unpublished first (its files stay on disk).",
        )
    return Problem(
        "override_exists",
        f"An override for '{model_name}' already exists (id {taken.pk}).",
        f"Change that override instead: PATCH /api/v1/model-overrides/{taken.pk}.",
    )


def override_validation(override: ModelOverride) -> Resolution:
    """What the resolver makes of this override's folder, whether or not the override is enabled."""
    cache_dir, _ = current_cache_dir()
    return resolve(
        override.model_name,
        cache_dir=cache_dir,
        override_path=override.path,
        trust_remote_code=override.trust_remote_code,
    )


def clean_roots(label: str, roots: list[str]) -> tuple[list[str], list[Problem]]:
    """Stripped, normalised and de-duplicated roots (order kept), and a Problem for each one that is not absolute."""
    cleaned: list[str] = []
    problems: list[Problem] = []
    for index, raw in enumerate(roots):
        text = raw.strip()
        if not os.path.isabs(text):
            shown = f"'{text}' is not an absolute path" if text else "is empty"
            problems.append(Problem("not_absolute", f"{label}[{index}] {shown}.", ROOT_HINT))
            continue
        normal = os.path.normpath(text)
        if normal not in cleaned:
            cleaned.append(normal)
    return cleaned, problems


def cache_path_problem(value: str) -> Problem | None:
    text = value.strip()
    if not text or Path(text).is_absolute():
        return None
    return Problem(
        "not_absolute",
        f"Model Cache Path '{text}' is not an absolute path.",
        "Leave it blank for the Hugging Face default, or give the hub cache's full path, e.g. /data/hf/hub.",
    )
