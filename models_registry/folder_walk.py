"""The one walk of a folder a member can fill (a snapshot, an override's or a published model's folder,
.no_exist/<commit>, refs/): mtm.shared.bounded_walk with a model's limits, which staff may change in the settings
MTM_MODEL_FOLDER_MAX_ENTRIES and MTM_MODEL_FOLDER_MAX_DEPTH. The model list's quick check counts a snapshot against
the same limits (snapshot_names) and lists snapshots/ and blobs/ within them (bounded_names), so the list and the
model page refuse the same folders, each at the cost of a bounded listing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import islice
from operator import attrgetter, methodcaller

from django.conf import settings

from mtm.shared.bounded_walk import DEPTH, ENTRIES, Folder, FolderTooLarge, walk

__all__ = ["Folder", "FolderTooLarge", "bounded_names", "counting_entries", "snapshot_names", "walk_model_folder"]

_NAME = attrgetter("name")
_IS_FOLDER = methodcaller("is_dir", follow_symlinks=False)  # by the entry's type: a link to a folder is no folder
_BELOW_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_counted: ContextVar[Listed | None] = ContextVar("entries_listed", default=None)


class Listed:
    """The entries snapshot_names and bounded_names have listed in a counting_entries block, and the folder limit
    (MTM_MODEL_FOLDER_MAX_ENTRIES) as the block began, read once for all of its folders."""

    __slots__ = ("entries", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.entries = 0
        self.max_entries = max_entries


@contextmanager
def counting_entries() -> Iterator[Listed]:
    """The entries listed by snapshot_names and bounded_names in this block: the model list's budget."""
    count = Listed(settings.MTM_MODEL_FOLDER_MAX_ENTRIES)
    token = _counted.set(count)
    try:
        yield count
    finally:
        _counted.reset(token)


def _charge(entries: int) -> None:
    count = _counted.get()
    if count is not None:
        count.entries += entries


def _max_entries() -> tuple[Listed | None, int]:
    """(the counting_entries block this runs in, or None; the folder limit)."""
    count = _counted.get()
    return count, count.max_entries if count is not None else settings.MTM_MODEL_FOLDER_MAX_ENTRIES


def walk_model_folder(folder: str | os.PathLike) -> list[Folder]:
    """Every folder under `folder`, or FolderTooLarge past a model's limits (before anything in it is looked at)."""
    return walk(
        folder,
        max_entries=settings.MTM_MODEL_FOLDER_MAX_ENTRIES,
        max_depth=settings.MTM_MODEL_FOLDER_MAX_DEPTH,
    )


def snapshot_names(folder: str) -> set[str]:
    """The names in `folder` (os.listdir's), once its whole tree is counted as walk_model_folder counts it: the same
    entries, the same real subfolders entered in the same order, FolderTooLarge at the same place. A subfolder is
    told by the entry's type, with no stat of each link (the snapshot's files are links to blobs). OSError when
    `folder` itself cannot be listed."""
    count, max_entries = _max_entries()
    with os.scandir(folder) as listing:
        entries = list(islice(listing, max_entries + 1))
    if count is not None:
        count.entries += len(entries)
    if len(entries) > max_entries:
        raise FolderTooLarge(folder, folder, ENTRIES, max_entries)
    names = set(map(_NAME, entries))
    try:
        below = list(map(_NAME, filter(_IS_FOLDER, entries)))
    except OSError:  # a file system without entry types, and an entry gone before its lstat
        below = [entry.name for entry in entries if _real_folder(entry)]
    if below:  # rare in a snapshot (onnx/, a GGUF folder): counted as the walk counts them
        _count_below(folder, below, len(entries), max_entries, settings.MTM_MODEL_FOLDER_MAX_DEPTH)
    return names


def _count_below(top: str, below: list[str], listed: int, max_entries: int, max_depth: int) -> None:
    """Go on counting under `top`'s real subfolders `below`, `listed` entries counted so far (walk's order)."""
    pending: list[tuple[str, int]] = []
    path, depth = top, 0
    while True:
        if below and depth >= max_depth:
            raise FolderTooLarge(top, os.path.join(path, sorted(below)[0]), DEPTH, max_depth)
        pending.extend((os.path.join(path, name), depth + 1) for name in sorted(below, reverse=True))
        if not pending:
            return
        path, depth = pending.pop()
        below = []
        try:
            fd = os.open(path, _BELOW_FLAGS)
        except OSError:
            continue  # as the walk: gone, or swapped for a link since it was listed
        try:
            with os.scandir(fd) as listing:
                for entry in listing:
                    listed += 1
                    _charge(1)
                    if listed > max_entries:
                        raise FolderTooLarge(top, path, ENTRIES, max_entries)
                    if _real_folder(entry):
                        below.append(entry.name)
        except FolderTooLarge:
            raise
        except OSError:
            below = []  # as the walk: a folder whose listing fails is left out
        finally:
            os.close(fd)


def bounded_names(folder: str) -> list[str]:
    """The names in `folder` (snapshots/, blobs/), as os.listdir gives them, or FolderTooLarge once it holds more
    than a model's folder may (MTM_MODEL_FOLDER_MAX_ENTRIES). OSError when it cannot be listed, or is a link (ELOOP):
    a snapshots/ a member made a link to another folder would have its names shown as snapshots."""
    count, max_entries = _max_entries()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with os.scandir(fd) as listing:
            names = list(map(_NAME, islice(listing, max_entries + 1)))
    finally:
        os.close(fd)
    if count is not None:
        count.entries += len(names)
    if len(names) > max_entries:
        raise FolderTooLarge(folder, folder, ENTRIES, max_entries)
    return names


def _real_folder(entry: os.DirEntry) -> bool:
    """A folder the walk enters: a folder, not a link to one (the entry's type; one lstat where it is unknown)."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False
