"""The run's own copy of its dataset and eval file: taken once, by the resolve stage, and the only thing read after.

The resolve stage checks the content of this copy (rows, row bytes, format, token lengths, its sha256), the trainer
reads only it, and validation takes its prompts from it: a member who rewrites her file after the check, in place or
otherwise, changes nothing the run reads. The copy is made from the file opened without following links, into a
private folder the worker has just created in its own work folder, and it is always a copy, never a hard link: a
link to a file its owner may still write would be her file under the worker's name. The train stage reads it again
only to see that it is still the file that was checked (one link, the digest recorded at resolve).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mtm.shared.files import handle_sha256
from mtm.shared.nofollow import LINK_ERRORS, open_file_nofollow
from mtm.shared.problems import Problem
from mtm.shared.tree_removal import remove_path
from projects.datasets import DEFAULT_MAX_BYTES
from projects.datasets.errors import DATASET_TOO_LARGE, DATASET_UNREADABLE, human_bytes
from projects.models import TrainingRun
from projects.runs.config import RunConfig, run_config
from projects.runs.paths import PathChanged, dataset_changed

SNAPSHOT_DIR = "dataset"
EVAL_SNAPSHOT_DIR = "eval-dataset"  # a folder of its own: the eval file may share the dataset's file name
SNAPSHOT_CHANGED = "dataset_snapshot_changed"
_FOLDER_MODE = 0o700  # a member's rows are read by the worker only, whatever the mode of her own file
_FILE_MODE = 0o600
_CHUNK = 1024 * 1024


def dataset_snapshot(work_folder: Path, source: str) -> Path:
    """Where snapshot_dataset puts the dataset `source`."""
    return work_folder / SNAPSHOT_DIR / os.path.basename(source)


def eval_snapshot(work_folder: Path, source: str) -> Path:
    """Where snapshot_eval_dataset puts the eval file `source`."""
    return work_folder / EVAL_SNAPSHOT_DIR / os.path.basename(source)


def snapshot_dataset(run: TrainingRun, work_folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """A copy of the run's dataset in `work_folder`/dataset/ (any earlier copy removed first). PathChanged when the
    path no longer leads to a regular file reached without links, cannot be opened, or holds more than `max_bytes`."""
    return _copy(run_config(run).dataset_path, work_folder / SNAPSHOT_DIR, max_bytes)


def snapshot_eval_dataset(run: TrainingRun, work_folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Path | None:
    """The run's eval file copied as the dataset is, into `work_folder`/eval-dataset/; None without one."""
    source = run_config(run).eval_dataset_path
    return _copy(source, work_folder / EVAL_SNAPSHOT_DIR, max_bytes) if source else None


def snapshot_sha256(path: Path) -> str:
    """The digest of a copy this module made, read without following a link."""
    with os.fdopen(open_file_nofollow(str(path)), "rb") as handle:
        return handle_sha256(handle)


def drop_snapshot(work_folder: Path) -> None:
    remove_path(work_folder / SNAPSHOT_DIR, ignore_errors=True)
    remove_path(work_folder / EVAL_SNAPSHOT_DIR, ignore_errors=True)


def snapshot_problem(config: RunConfig, work_folder: Path) -> Problem | None:
    """Why the copies the resolve stage took may not be trained on now: one is missing, is not a regular file with a
    single link, or no longer has the digest recorded when it was checked. None when both are as checked."""
    taken = [(config.dataset_path, dataset_snapshot(work_folder, config.dataset_path), config.dataset_sha256)]
    if config.eval_dataset_path:
        copy = eval_snapshot(work_folder, config.eval_dataset_path)
        taken.append((config.eval_dataset_path, copy, config.eval_dataset_sha256))
    for source, copy, recorded in taken:
        try:
            info = os.lstat(copy)
            same = stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and snapshot_sha256(copy) == recorded
        except OSError:
            same = False
        if not same:
            return Problem(
                SNAPSHOT_CHANGED,
                f"The copy of {source} that this run took and checked when it started ({copy}) is missing or no "
                "longer the file that was checked, so nothing was trained.",
                "Start the run again: it takes and checks a new copy of the dataset.",
            )
    return None


def _copy(source: str, folder: Path, max_bytes: int) -> Path:
    try:
        fd = open_file_nofollow(source)
    except OSError as exc:
        if exc.errno in (*LINK_ERRORS, errno.EINVAL, errno.ENOENT):
            raise PathChanged(dataset_changed(source, "changed")) from None
        raise PathChanged(
            Problem(
                DATASET_UNREADABLE,
                f"Cannot open dataset {source}: {exc.strerror or exc}.",
                f"Check the file's permissions (ls -la {source}); the workers run as uid {os.getuid()}.",
            )
        ) from None
    try:
        size = os.fstat(fd).st_size  # of the file opened, whatever is at its path by now
        if size > max_bytes:
            raise PathChanged(_too_large(source, size, max_bytes))
        remove_path(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(folder, _FOLDER_MODE)  # made now, never one found there
        dest = folder / os.path.basename(source)
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        try:
            written = _copy_bounded(fd, out, max_bytes)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    if written > max_bytes:
        remove_path(folder, ignore_errors=True)
        raise PathChanged(_grew_too_large(source, size, max_bytes))
    return dest


def _too_large(source: str, size: int, max_bytes: int) -> Problem:
    return Problem(
        DATASET_TOO_LARGE,
        f"Dataset {source} is {human_bytes(size)} ({size:,} bytes); the limit is {human_bytes(max_bytes)}, so "
        "nothing of it was copied or read.",
        "Use a smaller dataset: split it into files under the limit and train on one, or on a sample of it; then "
        "start the run again.",
    )


def _grew_too_large(source: str, size: int, max_bytes: int) -> Problem:
    return Problem(
        DATASET_TOO_LARGE,
        f"Dataset {source} grew past the limit of {human_bytes(max_bytes)} while it was copied (it was "
        f"{human_bytes(size)} when opened), so the copy was stopped at the limit and removed.",
        "Let whatever writes the file finish, keep it under the limit (split it, or train on a sample of it), then "
        "start the run again.",
    )


def _copy_bounded(src: int, dst: int, max_bytes: int) -> int:
    """Copy the open file `src` into `dst`, stopping one byte past `max_bytes` (a file still being written may grow
    past the size it had when opened). Returns the bytes written."""
    written = 0
    while written <= max_bytes and (chunk := os.read(src, min(_CHUNK, max_bytes + 1 - written))):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        written += len(chunk)
    return written
