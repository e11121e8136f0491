"""Whose folder is it: an output directory may not overlap what belongs to someone else.

A run deletes old checkpoint-N folders and overwrites the model and manifest in its output directory, so one
project's output directory may not be, lie inside, or contain another project's (past or present) output
directory unless the user may manage that project too; may not overlap the model cache, an override's
folder or the portal's own folders, whoever asks; and may not be (or lie inside) a folder that holds a
trained model's manifest or a live run's marker that the user may not manage.

Every member sees every project (projects.access), so the messages name the other project and its owner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from models_registry.lookup import current_cache_dir, dataset_roots, output_roots, validate_output_dir
from models_registry.models import ModelOverride, PortalSettings
from models_registry.outputs import OutputDirCheck
from mtm.shared.claims import Standing, claim_form, followed_identity, same_identity, standing
from mtm.shared.paths import is_within, resolved
from mtm.shared.problems import Problem
from projects.access import can_manage
from projects.models import TrainingProject, TrainingRun
from projects.trainer.outputs import MANIFEST_NAME, RUN_MARKER

OWNED = "output_directory_owned"
RESERVED = "output_directory_reserved"
CLAIMED = "output_directory_claimed"
LINKED = "output_directory_now_a_link"
REPLACED = "output_directory_replaced"
SHARED = "output_directory_shared"  # a warning: the folder of another project the member may manage
_MARKER_BYTES = 64


@dataclass(frozen=True)
class PortalFolder:
    label: str
    path: str
    inside_refused: bool = True  # False: only the folder itself and folders containing it are refused
    allowed_inside: tuple[str, ...] = ()  # folders inside `path` where new folders are allowed after all
    exact: bool = False  # `path` is compared as given, never resolved again

    def forms(self) -> set[str]:
        return {self.path} if self.exact else _forms(self.path)

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
    for name, path, identity in ModelOverride.objects.values_list("model_name", "path", "path_identity"):
        label = f"the folder of the model override for '{name}'"
        folders.extend(PortalFolder(label, form, exact=True) for form in override_forms(path, identity))
    outputs = output_roots()
    for root in dataset_roots():
        # An output root staff placed inside a dataset root is their choice: folders inside it stay allowed.
        nested = tuple(out for out in outputs if _inside_any(out, root))
        folders.append(PortalFolder("an allowed dataset root", root, allowed_inside=nested))
    folders.extend(
        PortalFolder("an allowed output root, shared by every member", root, inside_refused=False) for root in outputs
    )
    return folders


def override_forms(stored: str, identity: str) -> set[str]:
    """An override's folder as saved and, while the link (if any) still leads to the folder it led to at save, as it
    resolves now. A folder on the way swapped for a link since (or an override saved before identities were
    recorded, whose path now resolves elsewhere) reserves only the path as saved: a link to an output root must not
    reserve the whole root."""
    if not stored or not os.path.isabs(stored) or "\x00" in stored:
        return set()
    normal = os.path.normpath(stored)
    real = resolved(normal)
    if real is None or real == normal:
        return {normal}
    return {normal, real} if same_identity(identity, followed_identity(normal)) else {normal}


def _inside_any(path: str, root: str) -> bool:
    """Whether some form of `path` lies strictly inside some form of `root`."""
    return any(is_within(a, b) and a != b for a in _forms(path) for b in _forms(root))


def _reserved_problems(real: str) -> list[Problem]:
    problems = []
    for folder in portal_folders():
        for other in folder.forms():
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
    """(output directory as saved, project id) of every project and every past run whose folder still stands for
    what was saved (mtm.shared.claims): one since swapped for a link, or for another folder, claims nothing."""
    claims = []
    for pk, stored, identity in TrainingProject.objects.values_list("pk", "output_directory", "output_dir_identity"):
        if form := claim_form(stored, identity):
            claims.append((form, pk))
    runs = TrainingRun.objects.values_list("project_id", "run_folder")
    for pk, stored in runs.distinct():
        if form := claim_form(stored):
            claims.append((form, pk))
    return claims


def checked_output_dir(raw: str, user: Any, project: TrainingProject | None = None) -> OutputDirCheck:
    """The output directory as a save checks it for `user` saving `project` (None: a new one): the folder's own
    rules, then whose it is. The project's own saved folder changed since: a link is refused (nothing else is
    said of it), another folder there is taken as it is now, with a warning."""
    check = validate_output_dir(raw)
    changed = saved_output_problem(project, raw)
    if changed is not None and changed.code == LINKED:
        check.errors = [changed]
        return check
    if check.valid:
        check.errors.extend(output_dir_conflicts(check.path or "", user, project, adopt=True))
        if not check.errors:
            check.warnings.extend(shared_folder_warnings(check.path or "", user, project))
    if changed is not None:
        check.warnings.append(changed)
    return check


def shared_folder_warnings(path: str, user: Any, project: TrainingProject | None) -> list[Problem]:
    """The projects `user` may manage (other than `project`) whose output directory `path` is, is inside or
    contains: allowed, since they are the user's to share, but named, so that sharing is a choice. Another member's
    project there is refused instead (output_dir_conflicts)."""
    real = resolved(path) if path and os.path.isabs(path) and "\x00" not in path else None
    if real is None:
        return []
    own = project.pk if project is not None else None
    claims = _claimed_dirs()
    projects = TrainingProject.objects.select_related("owner").in_bulk({pk for _, pk in claims if pk != own})
    warnings, seen = [], set()
    for other, pk in claims:
        relation = _relation(real, other)
        if relation is None or pk == own or pk in seen or pk not in projects:
            continue
        seen.add(pk)
        shared = projects[pk]
        owner = "" if shared.owner_id == getattr(user, "pk", None) else f" (owner {shared.owner.get_username()})"
        warnings.append(
            Problem(
                SHARED,
                f"Output directory {real} {relation} the output directory {other} of project '{shared.name}'"
                f"{owner}: the runs of both projects would write there.",
                "Give each project a folder of its own inside an allowed output root, unless you mean them to share it.",
            )
        )
    return warnings


def saved_output_problem(project: TrainingProject | None, path: str) -> Problem | None:
    """Why `project`'s own saved output directory, when `path` names it, is no longer the folder it saved: a folder
    on its path is now a link (LINKED), or another folder stands there (REPLACED). None otherwise."""
    if project is None or not project.output_directory or not isinstance(path, str) or not os.path.isabs(path):
        return None
    saved = os.path.normpath(project.output_directory)
    if "\x00" in path or os.path.normpath(path) != saved:
        return None
    state, now = standing(saved, project.output_dir_identity)
    if state in (Standing.LINKED, Standing.UNRESOLVABLE):
        leads = f"now leads to {now}" if now else "now leads through a link the portal cannot follow"
        return Problem(
            LINKED,
            f"Output directory {saved} of project '{project.name}' {leads}: it, or a folder on its path, was "
            "replaced by a link since the project was saved. This project cannot train there, and the folder "
            "claims nothing for it.",
            f"Put the folder itself back at {saved} (no links on its path), or choose a new folder of this "
            "project's own inside an allowed output root and save.",
        )
    if state is Standing.REPLACED:
        return Problem(
            REPLACED,
            f"Output directory {saved} of project '{project.name}' is not the folder saved with the project: it "
            "was removed or moved, and another folder stands at that path now.",
            "If the folder there now is this project's (a run made it again after the old one was removed), save "
            "the project to keep it as its output directory; otherwise choose a new folder and save.",
        )
    return None


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


def output_dir_conflicts(
    path: str, user: Any, exclude_project: TrainingProject | int | None = None, *, adopt: bool = False
) -> list[Problem]:
    """Why `user` may not train into `path` (an absolute path) for `exclude_project`; empty when they may.

    `exclude_project` is the project the directory is for: its own earlier runs and manifest never conflict. When
    `path` is that project's saved output directory and it is no longer the folder saved, that is the one problem
    (with `adopt`, a save taking the folder there now as its own, only a link still is)."""
    if not path or not os.path.isabs(path) or "\x00" in path:
        return []  # check_output_dir reports these
    own = _project(exclude_project)
    if (changed := saved_output_problem(own, path)) and not (adopt and changed.code == REPLACED):
        return [changed]
    exclude = own.pk if own is not None else exclude_project
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
        if relation is None or pk == exclude or pk in seen or can_manage(user, projects[pk]):
            continue
        seen.add(pk)
        problems.append(_owned_problem(real, relation, other, projects[pk]))
    if not getattr(user, "is_staff", False):  # a folder no project claims: its owner is unknown, so staff only
        claimed = {form for form, _ in claims}
        kept = real in _kept_forms(own)
        problems.extend(
            _orphan_problem(real, folder)
            for folder in marked
            # A project keeps the folder it has: a marker planted above it since cannot take it away.
            if folder not in claimed and not (kept and folder != real)
        )
    return problems


def _project(project: TrainingProject | int | None) -> TrainingProject | None:
    if project is None or isinstance(project, TrainingProject):
        return project
    return TrainingProject.objects.filter(pk=project).first()


def _kept_forms(project: TrainingProject | None) -> set[str]:
    """The output directory `project` has now, while it still claims it (empty for a new project)."""
    if project is None:
        return set()
    form = claim_form(project.output_directory, project.output_dir_identity)
    return {form} if form else set()


def unresolvable_problem(path: str) -> Problem:
    return Problem(
        "output_directory_unresolvable",
        f"Output directory {path} cannot be resolved: a folder or link on its path cannot be followed "
        "(permission denied).",
        "Choose a folder of your own inside an allowed output root, with no links on its path.",
    )
