"""A run's dataset and output directory, checked again right before the trainer starts, and opened without
following links.

Between the start of a run and its training stage a folder may be swapped for a symlink. So the train stage
resolves both paths again and applies the save-time rules, then walks every component with O_NOFOLLOW: a link
planted even after that check makes the open fail instead of being followed. The trainer reads the dataset from
the copy the resolve stage took of it (projects.runs.dataset_snapshot), never from the path a member controls; a
separate eval file is rechecked the same way. Messages name paths only, never anything read from a file.

The run's own folder (`<output directory>/run-<id>`) is created by the train stage with mkdir, never adopted, and
its device and inode are recorded on the run's row (`run_folder_identity`): the validate stage re-opens it without
following links and reads nothing unless it is still that folder (as everyone who reads it later does:
projects.runs.folder).
"""

from __future__ import annotations

import os
from typing import Any

from models_registry.lookup import dataset_roots, output_roots, validate_output_dir
from models_registry.outputs import foreign_owner_problem, trusted_owners
from mtm.shared.claims import identity_of_open, same_identity
from mtm.shared.nofollow import LINK_ERRORS as _LINK_ERRORS
from mtm.shared.nofollow import ForeignFolder, open_dir_nofollow
from mtm.shared.owned_files import DIR_MODE, open_subdir, write_new
from mtm.shared.paths import is_within, resolved
from mtm.shared.problems import Problem
from projects.datasets import check_dataset_path
from projects.datasets.uploads import upload_problems
from projects.models import TrainingRun
from projects.ownership import output_dir_conflicts
from projects.runs.config import run_config

OUTPUT_CHANGED = "output_directory_changed"
DATASET_CHANGED = "dataset_changed"


class PathChanged(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def _user(run: TrainingRun) -> Any:
    """Whose rights the run's paths are judged by: who started it, else the project's owner."""
    return run.started_by or run.project.owner


def output_problem(run: TrainingRun) -> Problem | None:
    project = run.project
    stored = run_config(run).output_directory
    now = resolved(stored)
    # A run writes in its own folder inside the output directory (older rows: the output directory itself).
    if now is None or (now != run.run_folder and os.path.dirname(run.run_folder) != now):
        return Problem(
            OUTPUT_CHANGED,
            f"The output directory {stored} now leads to {now}, not to {os.path.dirname(run.run_folder)} "
            "as when the run was started: a folder on its path was replaced by a link. Nothing was written.",
            "Restore the folder (no links on the path), or choose another output directory, then start again.",
        )
    check = validate_output_dir(run.run_folder)
    problems = check.errors or output_dir_conflicts(run.run_folder, _user(run), project)
    return problems[0] if problems else None


def dataset_problem(run: TrainingRun, stored: str) -> Problem | None:
    """Why the dataset (or eval file) `stored` may not be read for the run now: it fails the dataset rules, leads
    elsewhere than the path itself (a link on its way), or is another member's upload."""
    located = check_dataset_path(stored, dataset_roots())
    if located.errors:
        return located.errors[0]
    if located.path != os.path.normpath(stored):
        return dataset_changed(stored, f"now leads to {located.path}")
    refused = upload_problems(located, _user(run), None)  # training on an upload: its owner and staff only
    return refused[0] if refused else None


def dataset_changed(path: str, what: str) -> Problem:
    return Problem(
        DATASET_CHANGED,
        f"The dataset {path} {what} since the project was saved: a file or folder on its path was replaced "
        "by a link or something other than a regular file. It was not read.",
        "Put the dataset file itself back (no links on its path) or save the project with another dataset, then "
        "start again.",
    )


def recheck(run: TrainingRun) -> Problem | None:
    """The first reason the run may not train now: its output directory, dataset or eval file resolves elsewhere
    than when it was checked, or fails the rules it passed at save and start."""
    config = run_config(run)
    eval_file = config.eval_dataset_path
    return (
        output_problem(run)
        or dataset_problem(run, config.dataset_path)
        or (dataset_problem(run, eval_file) if eval_file else None)
    )


RUN_FOLDER_EXISTS = "run_folder_exists"
RUN_FOLDER_CHANGED = "run_folder_changed"


def _allowed_root_of(path: str) -> str:
    """The deepest allowed output root `path` lies in; '/' when none (then every folder on its way is checked)."""
    roots = [resolved(root) or os.path.normpath(root) for root in output_roots()]
    return max((root for root in roots if is_within(path, root)), key=len, default=os.sep)


def create_run_folder(run: TrainingRun) -> int:
    """Create the run's folder (DIR_MODE) inside its project's output directory and return a descriptor of it. The
    output directory is walked without following links (missing folders created DIR_MODE), and every folder on the
    way below the allowed root must be the portal's or root's, as its descriptor shows (PathChanged with
    foreign_owner_problem otherwise); the run folder itself is made by this call with mkdir, never adopted:
    PathChanged (run_folder_exists) when anything already has its name. The folder's device and inode are recorded on
    the run's row so that every later reader can tell it is still the same folder."""
    parent_path, name = os.path.split(run.run_folder)
    try:
        parent = open_dir_nofollow(
            parent_path,
            create=True,
            mode=DIR_MODE,
            owners=trusted_owners(),
            owned_below=_allowed_root_of(parent_path),
        )
    except ForeignFolder as exc:  # made by another member since the resolve stage's check: never adopted
        raise PathChanged(foreign_owner_problem(parent_path, exc.folder, exc.uid)) from None
    except OSError as exc:
        if exc.errno not in _LINK_ERRORS:
            raise
        raise PathChanged(output_changed(run.run_folder)) from None
    try:
        # Made between the save's check and now by someone else: she could rename what the worker makes in it.
        owner = os.fstat(parent).st_uid
        if owner not in trusted_owners():
            raise PathChanged(foreign_owner_problem(parent_path, parent_path, owner))
        try:
            os.mkdir(name, DIR_MODE, dir_fd=parent)
        except FileExistsError:
            raise PathChanged(run_folder_exists(run.run_folder)) from None
        fd = open_subdir(parent, name)
    finally:
        os.close(parent)
    os.fchmod(fd, DIR_MODE)  # whatever the umask
    run.run_folder_identity = identity_of_open(fd)
    TrainingRun.objects.filter(pk=run.pk).update(run_folder_identity=run.run_folder_identity)
    return fd


def run_folder_exists(path: str) -> Problem:
    return Problem(
        RUN_FOLDER_EXISTS,
        f"The run folder {path} already exists, so the run did not start: a run writes only in a folder the worker "
        "creates for it, never in one that was there before. Nothing was written.",
        f"Move or remove {path} (nothing of this run is in it), then start the run again.",
    )


def _recorded_identity(run: TrainingRun) -> str:
    """The identity the train stage recorded, read from the row (it may be newer than `run`): '' when none was."""
    recorded = TrainingRun.objects.filter(pk=run.pk).values_list("run_folder_identity", flat=True).first()
    return recorded or ""


def reopen_run_folder(run: TrainingRun) -> int:
    """A descriptor of the folder create_run_folder made for the run, reached without following links; PathChanged
    (run_folder_changed) when the path now leads to another folder, a link, or nothing."""
    recorded = _recorded_identity(run)
    try:
        fd = open_dir_nofollow(run.run_folder)
    except OSError:
        raise PathChanged(run_folder_changed(run.run_folder)) from None
    if not same_identity(recorded, identity_of_open(fd)):
        os.close(fd)
        raise PathChanged(run_folder_changed(run.run_folder))
    return fd


def open_resume_checkpoint(run: TrainingRun) -> int | None:
    """A descriptor of the checkpoint folder a resumed run continues from, reached without following links and,
    when it lies in its source run's own folder, only while that is still the folder the source run created. None
    when the checkpoint is gone (the trainer then says there is nothing to resume from); PathChanged
    (resume_checkpoint_changed) when a link or another folder stands in its place."""
    path = run.resumed_from
    source = run.resume_source
    try:
        if source is not None and os.path.dirname(path) == source.run_folder:
            recorded = _recorded_identity(source)  # none for runs trained before folders were recorded
            folder = open_dir_nofollow(source.run_folder)
            try:
                if recorded and not same_identity(recorded, identity_of_open(folder)):
                    raise PathChanged(resume_changed(path, source.pk))
                return open_subdir(folder, os.path.basename(path))
            finally:
                os.close(folder)
        return open_dir_nofollow(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in _LINK_ERRORS:
            raise
        raise PathChanged(resume_changed(path, source.pk if source else None)) from None


def resume_changed(path: str, source: int | None) -> Problem:
    whose = f"run {source}'s own folder" if source is not None else "the folder it was in"
    return Problem(
        "resume_checkpoint_changed",
        f"The checkpoint {path} this run resumes from is no longer in {whose}: a folder on its path was moved, "
        "replaced or swapped for a link. Nothing was read from it.",
        "Put the run's folder back, or resume from another run (or start a fresh one).",
    )


def run_folder_changed(path: str) -> Problem:
    return Problem(
        RUN_FOLDER_CHANGED,
        f"The run folder {path} is no longer the folder this run created and trained in: it was moved, replaced or "
        "swapped for a link. Nothing in it was read.",
        "Put the run's own folder back at that path, or start a new run.",
    )


def output_changed(path: str) -> Problem:
    return Problem(
        OUTPUT_CHANGED,
        f"The output directory {path} (or a folder above it) was replaced by a link or a file, so training was "
        "stopped before writing through it.",
        "Restore the folder (no links on the path), or choose another output directory, then start again.",
    )


def write_marker(folder_fd: int, name: str, text: str) -> None:
    """Create `name` in the opened folder, never over an existing file nor through a link planted under that name."""
    write_new(folder_fd, name, text.encode())
