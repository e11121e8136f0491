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

from models_registry.models import ModelOverride, PortalSettings
from models_registry.services import current_cache_dir, dataset_roots, output_roots
from mtm.shared.paths import is_within, resolved
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
    allowed_inside: tuple[str, ...] = ()  # folders inside `path` where new folders are allowed after all

    def refuses(self, real: str, other: str, relation: str) -> bool:
        """Whether an output directory at `real`, in `relation` to this folder (as `other`), is refused."""
        if relation != "is inside":
            return True
        if not self.inside_refused:
            return False
        return not any(is_within(real, form) for inside in self.allowed_inside for form in _forms(inside))


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
    """A stored path as written and as it resolves now: a link changed since it was saved cannot hide it. A path
    that cannot be resolved (a link to a /proc folder the portal may not read) counts as written."""
    if not stored or not os.path.isabs(stored) or "\x00" in stored:
        return set()
    return {os.path.normpath(stored)} | ({real} if (real := resolved(stored)) else set())


def portal_folders() -> list[PortalFolder]:
    """Folders no output directory may overlap: the model cache, every override's folder, uploads (media), the
    portal's code and working folders and every allowed dataset root. An allowed output root itself (or a folder
    containing one) is refused too: a project there would claim every other member's folder inside it. A new
    folder inside var/ is allowed (the default output root is there)."""
    var = settings.VAR_DIR
    folders = [
        PortalFolder("the portal's code folder", str(settings.BASE_DIR), allowed_inside=(str(var),)),
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
    outputs = output_roots()
    for root in dataset_roots():
        # An output root staff placed inside a dataset root is their choice: folders inside it stay allowed.
        nested = tuple(out for out in outputs if _inside_any(out, root))
        folders.append(PortalFolder("an allowed dataset root", root, allowed_inside=nested))
    folders.extend(
        PortalFolder("an allowed output root, shared by every member", root, inside_refused=False) for root in outputs
    )
    return folders


def _inside_any(path: str, root: str) -> bool:
    """Whether some form of `path` lies strictly inside some form of `root`."""
    return any(is_within(a, b) and a != b for a in _forms(path) for b in _forms(root))


def _reserved_problems(real: str) -> list[Problem]:
    problems = []
    for folder in portal_folders():
        for other in _forms(folder.path):
            relation = _relation(real, other)
            if relation is None or not folder.refuses(real, other, relation):
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
    """`real` and each folder above it, up to but not including the allowed output root it is in, that holds a
    manifest or a run marker (lexists: a planted link counts). A marker in a root itself, or above it, claims
    nothing: anyone who may write in a root could plant one there and shut every member out of it."""
    roots = [form for root in output_roots() for form in _forms(root)]
    found = []
    folder = real
    while any(is_within(folder, root) and folder != root for root in roots):
        if any(os.path.lexists(os.path.join(folder, name)) for name in (MANIFEST_NAME, RUN_MARKER)):
            found.append(folder)
        folder = os.path.dirname(folder)
    return found


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


def lock_claims() -> None:
    """Serialise checking and saving output-directory claims (call inside a transaction): two members saving the
    same new folder at once cannot both pass the check. One row stands for all claims: the settings row (on
    SQLite every write transaction is serialised anyway, as it begins IMMEDIATE)."""
    PortalSettings.load()
    PortalSettings.objects.select_for_update().filter(pk=1).first()


def output_dir_conflicts(path: str, actor: Any, exclude_project: TrainingProject | int | None = None) -> list[Problem]:
    """Why `actor` may not train into `path` (an absolute path) for `exclude_project`; empty when they may.

    `exclude_project` is the project the directory is for: its own earlier runs and manifest never conflict."""
    if not path or not os.path.isabs(path) or "\x00" in path:
        return []  # check_output_dir reports these
    exclude = exclude_project.pk if isinstance(exclude_project, TrainingProject) else exclude_project
    real = resolved(path)
    if real is None:
        return [unresolvable_problem(path)]
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
        kept = real in _kept_forms(exclude_project)
        problems.extend(
            _orphan_problem(real, folder)
            for folder in marked
            # A project keeps the folder it has: a marker planted above it since cannot take it away.
            if folder not in claimed and not (kept and folder != real)
        )
    return problems


def _kept_forms(project: TrainingProject | int | None) -> set[str]:
    """The forms of the output directory `project` has now (empty for a new project)."""
    if project is None:
        return set()
    if not isinstance(project, TrainingProject):
        project = TrainingProject.objects.filter(pk=project).first()
    return _forms(project.output_directory) if project is not None else set()


def unresolvable_problem(path: str) -> Problem:
    return Problem(
        "output_directory_unresolvable",
        f"Output directory {path} cannot be resolved: a folder or link on its path cannot be followed "
        "(permission denied).",
        "Choose a folder of your own inside an allowed output root, with no links on its path.",
    )
