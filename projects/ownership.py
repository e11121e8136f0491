"""Whose folder is it: an output directory may not overlap what belongs to someone else.

A run deletes old checkpoint-N folders and overwrites the model and manifest in its output directory, so one
project's output directory may not be, lie inside, or contain another project's (past or present) output
directory unless the actor may manage that project too; may not overlap the model cache, an override's
folder or the portal's own folders, whoever asks; and may not be (or lie inside) a folder that holds a
trained model's manifest or a live run's marker that the actor may not manage.

Every member sees every project (projects.access), so the messages name the other project and its owner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from models_registry.models import ModelOverride
from models_registry.services import current_cache_dir
from mtm.shared.paths import is_within
from mtm.shared.problems import Problem
from projects.access import can_manage
from projects.models import TrainingProject, TrainingRun
from projects.trainer.outputs import MANIFEST_NAME, RUN_MARKER

OWNED = "output_directory_owned"
RESERVED = "output_directory_reserved"
CLAIMED = "output_directory_claimed"
_MARKER_BYTES = 64


@dataclass(frozen=True)
class PortalFolder:
    label: str
    path: str
    inside_refused: bool = True  # False: only the folder itself and folders containing it are refused


def _relation(path: str, other: str) -> str | None:
    """How `path` relates to `other` (both real paths): 'is', 'is inside', 'contains', or None."""
    if path == other:
        return "is"
    if is_within(path, other):
        return "is inside"
    if is_within(other, path):
        return "contains"
    return None


def _forms(stored: str) -> set[str]:
    """A stored path as written and as it resolves now: a link changed since it was saved cannot hide it."""
    if not stored or not os.path.isabs(stored):
        return set()
    return {os.path.normpath(stored), os.path.realpath(stored)}


def portal_folders() -> list[PortalFolder]:
    """Folders no output directory may overlap: the model cache, every override's folder, uploads (media) and
    the portal's working folders. A new folder inside var/ is allowed (the default output root is there)."""
    var = settings.VAR_DIR
    folders = [
        PortalFolder("the model cache", str(current_cache_dir()[0])),
        PortalFolder("the portal's media folder (uploaded datasets)", str(settings.MEDIA_ROOT)),
        PortalFolder("the portal's var/ folder (its database and settings)", str(var), inside_refused=False),
        PortalFolder("the portal's run folders", str(var / "runs")),
        PortalFolder("the portal's task broker folder", str(var / "broker")),
        PortalFolder("the portal's task results folder", str(var / "results")),
        PortalFolder("the portal's static files", str(settings.STATIC_ROOT)),
    ]
    for name, path in ModelOverride.objects.values_list("model_name", "path"):
        folders.append(PortalFolder(f"the folder of the model override for '{name}'", path))
    return folders


def _reserved_problems(real: str) -> list[Problem]:
    problems = []
    for folder in portal_folders():
        for other in _forms(folder.path):
            relation = _relation(real, other)
            if relation is None or (relation == "is inside" and not folder.inside_refused):
                continue
            problems.append(
                Problem(
                    RESERVED,
                    f"Output directory {real} {relation} {folder.label} ({other}); training there could delete "
                    "or overwrite the portal's files.",
                    "Choose a new folder of its own inside an allowed output root.",
                )
            )
            break
    return problems


def _claimed_dirs() -> list[tuple[str, int]]:
    """(output directory as stored and as it resolves now, project id) of every project and every past run."""
    claims = []
    for pk, stored in TrainingProject.objects.values_list("pk", "output_directory"):
        claims.extend((form, pk) for form in _forms(stored))
    runs = TrainingRun.objects.values_list("project_id", "output_directory")
    for pk, stored in runs.distinct():
        claims.extend((form, pk) for form in _forms(stored))
    return claims


def _owned_problem(real: str, relation: str, other: str, project: TrainingProject) -> Problem:
    return Problem(
        OWNED,
        f"Output directory {real} {relation} the output directory {other} of project '{project.name}' "
        f"(owner {project.owner.get_username()}); a run here could delete its checkpoints or overwrite its model.",
        "Choose a new folder of your own inside an allowed output root, or ask that project's owner or staff.",
    )


def _marker_run(folder: str) -> int | None:
    """The run id written in `folder`'s run marker (read without following a link), or None."""
    try:
        fd = os.open(os.path.join(folder, RUN_MARKER), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, _MARKER_BYTES).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() and len(text) < 19 else None


def _marked_folders(real: str) -> list[str]:
    """`real` and each folder above it that holds a manifest or a run marker (lexists: a planted link counts)."""
    found = []
    folder = real
    while True:
        if any(os.path.lexists(os.path.join(folder, name)) for name in (MANIFEST_NAME, RUN_MARKER)):
            found.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            return found
        folder = parent


def _marker_claims(marked: list[str]) -> list[tuple[str, int]]:
    """(folder, project id) for each marked folder whose run marker names a run that still exists."""
    claims = []
    for folder in marked:
        run_id = _marker_run(folder)
        if run_id is not None:
            claims.extend(
                (folder, pk) for pk in TrainingRun.objects.filter(pk=run_id).values_list("project_id", flat=True)
            )
    return claims


def _orphan_problem(real: str, folder: str) -> Problem:
    where = "is" if folder == real else "is inside"
    return Problem(
        CLAIMED,
        f"Output directory {real} {where} {folder}, which holds a trained model or a run's marker "
        f"({MANIFEST_NAME} or {RUN_MARKER}) that belongs to no project.",
        "Choose a new, empty folder inside an allowed output root; if that model is yours and no longer needed, "
        "move or delete it first (or ask staff).",
    )


def output_dir_conflicts(path: str, actor: Any, exclude_project: TrainingProject | int | None = None) -> list[Problem]:
    """Why `actor` may not train into `path` (an absolute path) for `exclude_project`; empty when they may.

    `exclude_project` is the project the directory is for: its own earlier runs and manifest never conflict."""
    if not path or not os.path.isabs(path) or "\x00" in path:
        return []  # check_output_dir reports these
    exclude = exclude_project.pk if isinstance(exclude_project, TrainingProject) else exclude_project
    real = os.path.realpath(path)
    problems = _reserved_problems(real)
    seen: set[int] = set()
    marked = _marked_folders(real)
    claims = _claimed_dirs() + _marker_claims(marked)
    projects = TrainingProject.objects.select_related("owner").in_bulk({pk for _, pk in claims})
    for other, pk in claims:
        relation = _relation(real, other)
        if relation is None or pk == exclude or pk in seen or can_manage(actor, projects[pk]):
            continue
        seen.add(pk)
        problems.append(_owned_problem(real, relation, other, projects[pk]))
    if not getattr(actor, "is_staff", False):  # a folder no project claims: its owner is unknown, so staff only
        claimed = {form for form, _ in claims}
        problems.extend(_orphan_problem(real, folder) for folder in marked if folder not in claimed)
    return problems
