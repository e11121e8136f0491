"""A run's dataset and output directory, checked again right before the trainer starts, and opened without
following links.

Between the start of a run and its training stage a folder may be swapped for a symlink. So the train stage
resolves both paths again and applies the save-time rules, then walks every component with O_NOFOLLOW: a link
planted even after that check makes the open fail instead of being followed. The trainer reads the dataset from
a snapshot (a hard link or copy made from the opened file) in the run's own folder, never from the path a
member controls; a separate eval file is rechecked and snapshotted the same way. Messages name paths only, never anything read from a file.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from models_registry.services import dataset_roots, validate_output_dir
from mtm.shared.nofollow import LINK_ERRORS as _LINK_ERRORS
from mtm.shared.nofollow import open_dir_nofollow, open_file_nofollow
from mtm.shared.paths import resolved
from mtm.shared.problems import Problem
from projects.datasets import check_dataset_path
from projects.datasets.errors import DATASET_UNREADABLE
from projects.models import TrainingRun
from projects.ownership import output_dir_conflicts
from projects.run_config import run_config
from projects.uploads import upload_problems

OUTPUT_CHANGED = "output_directory_changed"
DATASET_CHANGED = "dataset_changed"
SNAPSHOT_DIR = "dataset"
EVAL_SNAPSHOT_DIR = "eval-dataset"  # a folder of its own: the eval file may share the dataset's file name


class PathChanged(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def _actor(run: TrainingRun) -> Any:
    return run.started_by or run.project.owner


def output_problem(run: TrainingRun) -> Problem | None:
    project = run.project
    stored = run_config(run).output_directory
    now = resolved(stored)
    # A run writes in its own folder inside the output directory (older rows: the output directory itself).
    if now is None or (now != run.output_directory and os.path.dirname(run.output_directory) != now):
        return Problem(
            OUTPUT_CHANGED,
            f"The output directory {stored} now leads to {now}, not to {os.path.dirname(run.output_directory)} "
            "as when the run was started: a folder on its path was replaced by a link. Nothing was written.",
            "Restore the folder (no links on the path), or choose another output directory, then start again.",
        )
    check = validate_output_dir(run.output_directory)
    problems = check.errors or output_dir_conflicts(run.output_directory, _actor(run), project)
    return problems[0] if problems else None


def _dataset_problem(run: TrainingRun, stored: str) -> Problem | None:
    located = check_dataset_path(stored, dataset_roots())
    if located.errors:
        return located.errors[0]
    if located.path != os.path.normpath(stored):
        return _dataset_changed(stored, f"now leads to {located.path}")
    refused = upload_problems(located, _actor(run), None)  # training on an upload: its owner and staff only
    return refused[0] if refused else None


def _dataset_changed(path: str, what: str) -> Problem:
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
        or _dataset_problem(run, config.dataset_path)
        or (_dataset_problem(run, eval_file) if eval_file else None)
    )


def open_output_dir(run: TrainingRun) -> int:
    """A descriptor of the run's output directory, created without following links; PathChanged otherwise."""
    try:
        return open_dir_nofollow(run.output_directory, create=True)
    except OSError as exc:
        if exc.errno not in _LINK_ERRORS:
            raise
        raise PathChanged(output_changed(run.output_directory)) from None


def output_changed(path: str) -> Problem:
    return Problem(
        OUTPUT_CHANGED,
        f"The output directory {path} (or a folder above it) was replaced by a link or a file, so training was "
        "stopped before writing through it.",
        "Restore the folder (no links on the path), or choose another output directory, then start again.",
    )


def write_marker(folder_fd: int, name: str, text: str) -> None:
    """Write `name` in the opened folder, never through a link planted under that name."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder_fd)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def snapshot_dataset(run: TrainingRun, run_folder: Path) -> Path:
    """The dataset as the trainer will read it: `run_folder`/dataset/<name>, a hard link to (or a copy of) the file
    opened without following links. PathChanged when the path no longer leads to a regular file."""
    return _snapshot(run_config(run).dataset_path, run_folder / SNAPSHOT_DIR)


def snapshot_eval_dataset(run: TrainingRun, run_folder: Path) -> Path | None:
    """The run's eval file snapshotted as the dataset is, in `run_folder`/eval-dataset/; None without one."""
    source = run_config(run).eval_dataset_path
    return _snapshot(source, run_folder / EVAL_SNAPSHOT_DIR) if source else None


def eval_snapshot(run_folder: Path, source: str) -> Path:
    """Where snapshot_eval_dataset put the eval file `source`."""
    return run_folder / EVAL_SNAPSHOT_DIR / os.path.basename(source)


def _snapshot(source: str, folder: Path) -> Path:
    try:
        fd = open_file_nofollow(source)
    except OSError as exc:
        if exc.errno in (*_LINK_ERRORS, errno.EINVAL, errno.ENOENT):
            raise PathChanged(_dataset_changed(source, "changed")) from None
        raise PathChanged(
            Problem(
                DATASET_UNREADABLE,
                f"Cannot open dataset {source}: {exc.strerror or exc}.",
                f"Check the file's permissions (ls -la {source}); the workers run as uid {os.getuid()}.",
            )
        ) from None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    dest = folder / os.path.basename(source)
    try:
        try:
            os.link(f"/proc/self/fd/{fd}", dest, follow_symlinks=True)
        except OSError:  # another filesystem, or a file the portal may read but not link (protected_hardlinks)
            with os.fdopen(os.dup(fd), "rb") as src, open(dest, "xb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
    finally:
        os.close(fd)
    return dest


def drop_snapshot(run_folder: Path) -> None:
    shutil.rmtree(run_folder / SNAPSHOT_DIR, ignore_errors=True)
    shutil.rmtree(run_folder / EVAL_SNAPSHOT_DIR, ignore_errors=True)
