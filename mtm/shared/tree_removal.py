"""Removing a folder tree someone else may have filled, as shutil.rmtree does but without its two weak points there:
rmtree calls itself once per level (about a thousand nested folders make it raise RecursionError) and holds a
descriptor per level, and it has no bound on what it will go through.

Here the tree is removed one folder at a time through directory descriptors, never following a link (a link is
removed as a link; what it leads to is never touched), holding one descriptor at a time: the way back up is the
folder's "..", accepted only while it is still the folder the removal came down from. Past MAX_ENTRIES files and
folders the removal stops and says what is left, where, and how to remove it by hand. No Django here: the trainer
child removes its staging folders with this too.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from mtm.shared.bounded_walk import ENTRIES, FolderTooLarge

# What the portal removes (an upload's folder, a dataset snapshot, a trainer's staging folder or checkpoint) holds a
# few hundred entries at most; this leaves room for any real one and bounds what a planted tree costs a request.
MAX_ENTRIES = 20_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)  # what O_NOFOLLOW|O_DIRECTORY answers for a link or a file

log = logging.getLogger(__name__)


class RemovalStopped(FolderTooLarge):
    """The removal of `top` stopped after `limit` entries, in the folder `where`; what was not removed yet stays."""

    @property
    def message(self) -> str:
        branch = f" in {os.path.join(self.top, self.branch)}" if self.branch else ""
        return (
            f"{self.top} was not removed: it holds more than {self.limit} files and folders, more than anything the "
            f"portal writes, so the removal stopped{branch} and what it had not reached is still in place. Staff can "
            f"remove it by hand: rm -rf -- {shlex.quote(self.top)}"
        )

    def __str__(self) -> str:
        return self.message


class FolderMoved(OSError):
    """A folder of the tree was moved out of it while it was being removed: the removal stopped rather than go on
    in whatever folder it now lies in."""

    def __init__(self, top: str, where: str) -> None:
        self.top, self.where = top, where
        super().__init__(errno.ESTALE, self.message, top)

    @property
    def message(self) -> str:
        return (
            f"{self.top} was not wholly removed: a folder in it was moved elsewhere while it was being removed, so "
            f"the removal stopped; what is left of {self.top} is still in place. Staff can remove it by hand: "
            f"rm -rf -- {shlex.quote(self.top)}"
        )

    def __str__(self) -> str:
        return self.message


@dataclass
class _Level:
    """A folder the removal is in: its name in the folder above, its device and inode, its folders left to remove."""

    name: str
    identity: tuple[int, int]
    folders: list[str] = field(default_factory=list)


def remove_entry(
    dir_fd: int,
    name: str,
    *,
    max_entries: int = MAX_ENTRIES,
    shown: str | None = None,
    ignore_errors: bool = False,
) -> None:
    """Remove `name` from the folder `dir_fd`: a folder with everything in it, or anything else (a link included)
    as itself; nothing when it is gone already. RemovalStopped past `max_entries` entries and FolderMoved when a
    folder of it was moved away meanwhile, whatever `ignore_errors`; any other OSError is raised at once, or with
    `ignore_errors` the entry it concerns is left and the rest removed (as rmtree's ignore_errors). `shown` is the
    path messages give for `name` (default `name`)."""
    shown = shown or name

    def failed(exc: OSError) -> None:
        if not ignore_errors:
            raise exc

    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as exc:
        failed(exc)
        return
    if not stat.S_ISDIR(info.st_mode):
        _unlink(dir_fd, name, failed)
        return
    _remove_folder(dir_fd, name, shown, max_entries, failed)


def remove_path(path: str | os.PathLike, *, max_entries: int = MAX_ENTRIES, ignore_errors: bool = False) -> None:
    """remove_entry for the last part of `path` in its parent folder, reached as the path says (a link above the
    last part is followed, as rmtree follows it). With `ignore_errors` nothing is raised: a stopped removal is
    logged as a warning with its message, other errors are ignored."""
    path = os.path.normpath(os.fspath(path))
    parent, name = os.path.split(path)
    try:
        parent_fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        if ignore_errors:
            return
        if not os.path.lexists(path):
            return
        raise
    try:
        remove_entry(parent_fd, name, max_entries=max_entries, shown=path, ignore_errors=ignore_errors)
    except (RemovalStopped, FolderMoved) as stopped:
        if not ignore_errors:
            raise
        log.warning("%s", stopped.message)
    except OSError:
        if not ignore_errors:
            raise
    finally:
        os.close(parent_fd)


def _remove_folder(dir_fd: int, name: str, shown: str, limit: int, failed: Callable[[OSError], None]) -> None:
    fd = _open_folder(dir_fd, name, failed)
    if fd is None:
        return
    levels = [_Level(name, _identity(fd))]
    listed = 0
    try:
        listed = _clear(fd, levels, listed, shown, limit, failed)
        while levels:
            level = levels[-1]
            if level.folders:
                child = level.folders.pop()
                child_fd = _open_folder(fd, child, failed)
                if child_fd is None:
                    continue
                os.close(fd)
                fd = child_fd
                levels.append(_Level(child, _identity(fd)))
                listed = _clear(fd, levels, listed, shown, limit, failed)
                continue
            levels.pop()
            if not levels:
                break
            parent_fd = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            if _identity(parent_fd) != levels[-1].identity:
                os.close(parent_fd)
                raise FolderMoved(shown, _where(shown, levels))
            os.close(fd)
            fd = parent_fd
            _rmdir(fd, level.name, failed)
    finally:
        os.close(fd)
    _rmdir(dir_fd, name, failed)


def _clear(fd: int, levels: list[_Level], listed: int, shown: str, limit: int, failed: Callable) -> int:
    """List the folder `fd` (the last of `levels`), counting toward `limit`; remove all but its folders, which are
    kept on the level to go into. The count so far."""
    level = levels[-1]
    others = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                listed += 1
                if listed > limit:
                    raise RemovalStopped(shown, _where(shown, levels), ENTRIES, limit)
                try:
                    is_folder = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_folder = False
                (level.folders if is_folder else others).append(entry.name)
    except RemovalStopped:
        raise
    except OSError as exc:  # ignored: what was listed is removed, the folder's rmdir then fails (ignored too)
        failed(exc)
    for other in others:
        _unlink(fd, other, failed)
    return listed


def _open_folder(dir_fd: int, name: str, failed: Callable[[OSError], None]) -> int | None:
    """A descriptor of the folder `name`, or None: gone, or (swapped for a link or a file since it was listed)
    removed as what it is now, or an error `failed` ignored."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in _NOT_A_FOLDER:
            _unlink(dir_fd, name, failed)
        else:
            failed(exc)
        return None


def _unlink(dir_fd: int, name: str, failed: Callable[[OSError], None]) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        failed(exc)


def _rmdir(dir_fd: int, name: str, failed: Callable[[OSError], None]) -> None:
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        failed(exc)


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _where(shown: str, levels: list[_Level]) -> str:
    return os.path.join(shown, *(level.name for level in levels[1:]))
