"""Reading a finished run's folder through its descriptor, never following a link and never waiting on a FIFO.

The trainer leaves only folders and regular files in a run folder (mtm.shared.owned_files seals each one).
Whatever else is found there (a FIFO, a link, a device, a socket) was put there by someone else: it is named, and
its content is never read. Files are opened relative to their folder's descriptor with O_NOFOLLOW|O_NONBLOCK,
checked to be regular files and read up to a bound. The walk lists at most MAX_ENTRIES entries (FolderTooLarge past
it), so a folder filled with a million empty files costs a bounded listing.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from models_registry.regular_files import NotRegularFile, kind_of
from mtm.shared.bounded_walk import ENTRIES, FolderTooLarge
from mtm.shared.nofollow import FILE_FLAGS, read_up_to
from mtm.shared.owned_files import open_subdir

MAX_DEPTH = 32
# A run folder holds its model, adapter and checkpoints: a few hundred files, a few thousand with many checkpoints.
MAX_ENTRIES = 50_000


class TooLarge(OSError):
    """A file past the bound its reader sets."""


@dataclass(frozen=True)
class Entry:
    rel: str  # the path inside the run folder, '/'-separated
    mode: int  # lstat's: a link is a link here

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def folder(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def kind(self) -> str:
        return "a link" if stat.S_ISLNK(self.mode) else kind_of(self.mode)


def _nothing(_name: str) -> bool:
    return False


def walk(
    folder_fd: int, *, skip: Callable[[str], bool] = _nothing, max_entries: int = MAX_ENTRIES
) -> Iterator[tuple[Entry, int, str]]:
    """Every entry under `folder_fd` (depth first, names sorted), with the descriptor of the folder that holds it
    (valid while the entry is being looked at) and its name there. Folders whose name `skip` accepts (at any depth)
    are neither yielded nor entered. Links are yielded as links, never followed; a folder that cannot be entered (it was
    swapped for a link meanwhile) is yielded and not entered. FolderTooLarge (its `top` ".", its `where` the folder
    reached, relative) once more than `max_entries` entries are listed: too_many_entries says it."""
    yield from _walk(folder_fd, "", skip, 0, _Budget(max_entries))


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.listed = limit, 0

    def take(self, prefix: str) -> None:
        self.listed += 1
        if self.listed > self.limit:
            raise FolderTooLarge(".", prefix.rstrip("/") or ".", ENTRIES, self.limit)


def too_many_entries(exc: FolderTooLarge, shown: object) -> str:
    """What a check says of the run folder `shown` whose walk stopped at its bound."""
    where = f" (the walk stopped in {shown}/{exc.branch})" if exc.branch else ""
    return (
        f"{shown} holds more than {exc.limit} files and folders{where}, far more than a run writes: it was not "
        "checked further, and the run's output is not trusted. Someone else filled it; start a fresh run."
    )


def _walk(
    dir_fd: int, prefix: str, skip: Callable[[str], bool], depth: int, budget: _Budget
) -> Iterator[tuple[Entry, int, str]]:
    names = []
    with os.scandir(dir_fd) as listing:
        for found in listing:
            budget.take(prefix)
            try:
                names.append((found.name, found.stat(follow_symlinks=False).st_mode))
            except FileNotFoundError:  # removed while it was listed
                continue
    for name, mode in sorted(names):
        if stat.S_ISDIR(mode) and skip(name):
            continue
        entry = Entry(f"{prefix}{name}", mode)
        yield entry, dir_fd, name
        if entry.folder and depth < MAX_DEPTH:
            try:
                child = open_subdir(dir_fd, name)
            except OSError:
                continue
            try:
                yield from _walk(child, f"{entry.rel}/", skip, depth + 1, budget)
            finally:
                os.close(child)


def foreign_entries(folder_fd: int) -> list[Entry]:
    """The entries under `folder_fd` that are neither folders nor regular files."""
    return [entry for entry, _, _ in walk(folder_fd) if not (entry.folder or entry.regular)]


def read_at(dir_fd: int, name: str, limit: int) -> bytes:
    """The content of the regular file `name` in `dir_fd`, not through a link (OSError ELOOP), never waiting on a
    FIFO (NotRegularFile), at most `limit` bytes (TooLarge past it)."""
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"it is {kind_of(mode)}, not a regular file", name)
        data = read_up_to(fd, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge(errno.EFBIG, f"it is larger than {limit} bytes", name)
    return data
