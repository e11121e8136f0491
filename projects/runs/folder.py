"""A run's own folder as the worker made it, for whoever reads the run's result after it was written: publishing, a
published name, the playground, the adapter download and the run page.

A member who can write in a project's output directory can rename a run folder away and put a folder of her own
(or a link to another member's run) under its name. So the folder is opened without following any link on its
path, and its device and inode must be those the train stage recorded on the run's row when it created it
(`run_folder_identity`). Rows from before that was recorded (blank) are held to what can still be checked: no link
on the path, and the manifest the trainer writes last, with its finish time.
"""

from __future__ import annotations

import os
from typing import Any

from models_registry.models import PublishedModel
from mtm.shared.claims import identity_of, identity_of_open, same_identity
from mtm.shared.nofollow import LINK_ERRORS, open_dir_nofollow
from mtm.shared.owned_files import open_subdir
from mtm.shared.problems import Problem
from projects.models import TrainingRun
from projects.runs.manifest import written_manifest
from projects.trainer.outputs import MERGED_DIR

RUN_FOLDER_CHANGED = "run_folder_changed"
RUN_FILES_MISSING = "run_files_missing"


class RunFolderRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def _whose(run_id: Any) -> str:
    return f"Run {run_id}'s folder" if run_id is not None else "The folder of the run (since deleted)"


def folder_changed(run_id: Any, path: str, how: str, hint: str) -> Problem:
    return Problem(
        RUN_FOLDER_CHANGED,
        f"{_whose(run_id)} {path} is not the folder the worker created for it: {how}. Its files may have been "
        "replaced since the run, so nothing in it was read.",
        hint,
    )


def _missing(run_id: Any, path: str) -> Problem:
    return Problem(
        RUN_FILES_MISSING,
        f"{_whose(run_id)} {path or '(none)'} is not on disk: it was deleted or moved after the run.",
        "Put the run's folder back where it was written, or train the project again and use that run.",
    )


RESTORE_HINT = (
    "Put the run's own folder back at that path (the one the run wrote; `ls -lid` shows a folder's inode), or train "
    "the project again and use that run."
)


def open_run_folder(run: TrainingRun, hint: str = RESTORE_HINT) -> int:
    """A descriptor of the run's folder as the worker made it; RunFolderRefused (run_folder_changed) when a link is
    on its path or another folder stands there now, (run_files_missing) when nothing does. `hint` says what to do
    next where the caller is (publishing, the playground)."""
    return open_folder_as_made(run.run_folder or "", run.run_folder_identity, run.pk, hint)


def open_folder_as_made(path: str, recorded: str, run_id: Any, hint: str = RESTORE_HINT) -> int:
    """open_run_folder for the run `run_id` whose folder is `path`, recorded as `recorded` ('': not recorded)."""
    if not os.path.isabs(path) or "\x00" in path:
        raise RunFolderRefused(_missing(run_id, path))
    try:
        fd = open_dir_nofollow(path)
    except FileNotFoundError:
        raise RunFolderRefused(_missing(run_id, path)) from None
    except OSError as exc:
        if exc.errno not in LINK_ERRORS:
            raise RunFolderRefused(_missing(run_id, path)) from None
        how = "a folder on its path, or the folder itself, is now a link (or a file)"
        raise RunFolderRefused(folder_changed(run_id, path, how, hint)) from None
    if recorded and not same_identity(recorded, identity_of_open(fd)):
        os.close(fd)
        how = f"another folder stands at that path now (device:inode {identity_of(path) or '?'}, not {recorded})"
        raise RunFolderRefused(folder_changed(run_id, path, how, hint))
    if not recorded and written_manifest(fd) is None:
        os.close(fd)
        how = "it holds no manifest with the finish time the trainer writes last"
        raise RunFolderRefused(folder_changed(run_id, path, how, hint))
    return fd


def run_folder_problem(run: TrainingRun, hint: str = RESTORE_HINT) -> Problem | None:
    """Why the run's folder may not be read now (open_run_folder's problem), or None."""
    try:
        os.close(open_run_folder(run, hint))
    except RunFolderRefused as refused:
        return refused.problem
    return None


def published_hint(name: str) -> str:
    return (
        f"Unpublish '{name}' (its publisher, the run's project owner or staff), or put the run's own folder back at "
        "that path; then publish again from a run whose folder was not changed."
    )


def open_published_folder(path: str, run: TrainingRun | None, name: str, hint: str = "") -> int:
    """A descriptor of the model folder `path` published as `name` from `run`, reached without following any link:
    RunFolderRefused when its run's folder is not the one the worker made (open_run_folder), or `path` is not that
    folder or its merged/ folder, or is reached through a link. A name whose run was deleted is held to the rule for
    rows without a recorded folder."""
    hint = hint or published_hint(name)
    if run is None:
        folder, recorded, run_id = os.path.dirname(path) if os.path.basename(path) == MERGED_DIR else path, "", None
    else:
        folder, recorded, run_id = run.run_folder, run.run_folder_identity, run.pk
    if path not in (folder, os.path.join(folder, MERGED_DIR)):
        raise RunFolderRefused(folder_changed(run_id, folder, f"the published folder {path} is not in it", hint))
    fd = open_folder_as_made(folder, recorded, run_id, hint)
    if path == folder:
        return fd
    try:
        return open_subdir(fd, MERGED_DIR)
    except OSError:
        how = f"its {MERGED_DIR}/ folder is missing or is a link"
        raise RunFolderRefused(folder_changed(run_id, folder, how, hint)) from None
    finally:
        os.close(fd)


def published_folder_problem(path: str, run: TrainingRun | None, name: str) -> Problem | None:
    """Why the model folder `path` published as `name` from `run` may not be read now (open_published_folder's
    problem), or None."""
    try:
        os.close(open_published_folder(path, run, name))
    except RunFolderRefused as refused:
        return refused.problem
    return None


def published_model_problem(published: PublishedModel) -> Problem | None:
    """published_folder_problem of a published model's row: the check projects registers for the resolver
    (models_registry.published_folder)."""
    return published_folder_problem(published.path, published.run, published.model_name)


__all__ = [
    "RUN_FILES_MISSING",
    "RUN_FOLDER_CHANGED",
    "RunFolderRefused",
    "open_folder_as_made",
    "open_published_folder",
    "open_run_folder",
    "published_folder_problem",
    "published_model_problem",
    "run_folder_problem",
]
