"""A walk of a folder tree that someone else may have filled: iterative (no nesting makes it raise RecursionError, as
os.walk does past about a thousand levels), never entering a link to a folder, and refused past a number of entries
or a depth before the caller looks at any of them, so a planted tree costs a bounded listing and nothing more.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

# A model's folder holds a few hundred files at most a few folders deep; these leave room for any real one.
MAX_ENTRIES = 5_000
MAX_DEPTH = 16
ENTRIES, DEPTH = "entries", "depth"
_TOP_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_BELOW_FLAGS = _TOP_FLAGS | os.O_NOFOLLOW


class FolderTooLarge(OSError):
    """`top` holds more than `limit` entries (`kind` ENTRIES) or a folder more than `limit` folders below it (DEPTH);
    `where` is the folder the walk had reached. An OSError (EFBIG): for a caller, a tree too large to walk is one it
    cannot read."""

    def __init__(self, top: str, where: str, kind: str, limit: int) -> None:
        self.top, self.where, self.kind, self.limit = top, where, kind, limit
        super().__init__(errno.EFBIG, self.reason, top)

    @property
    def reason(self) -> str:
        if self.kind == ENTRIES:
            return f"holds more than {self.limit} files and folders"
        return f"has folders nested more than {self.limit} deep"

    @property
    def branch(self) -> str:
        """The entry of `top` the limit was reached in ("" when in `top` itself): what to remove."""
        rel = os.path.relpath(self.where, self.top)
        return "" if rel == "." else rel.split(os.sep, 1)[0]


@dataclass(frozen=True)
class Folder:
    """One folder of the tree, as os.walk yields it: its path, the names of its folders (links to folders among
    them, never entered) and of everything else (files, links to files, dangling links, FIFOs...)."""

    path: str
    folders: list[str]
    others: list[str]


def walk(top: str | os.PathLike, *, max_entries: int = MAX_ENTRIES, max_depth: int = MAX_DEPTH) -> list[Folder]:
    """Every folder under `top` (itself first, then depth first, names sorted), as os.walk(top) without following
    links: a link to a folder is listed and not entered, and a folder that cannot be listed is left out. `top` itself
    may be a link. Raises FolderTooLarge once more than `max_entries` entries are listed or a folder more than
    `max_depth` below `top` is found; nothing is returned then, so a caller does no work on a refused tree."""
    top = os.fspath(top)
    found: list[Folder] = []
    listed = 0
    pending = [(top, 0)]
    while pending:
        path, depth = pending.pop()
        try:
            fd = os.open(path, _BELOW_FLAGS if depth else _TOP_FLAGS)
        except OSError:
            continue  # gone, or swapped for a link or a file since it was listed
        folders, others, linked = [], [], set()
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    listed += 1
                    if listed > max_entries:
                        raise FolderTooLarge(top, path, ENTRIES, max_entries)
                    if _is_folder(entry):
                        folders.append(entry.name)
                        if entry.is_symlink():
                            linked.add(entry.name)
                    else:
                        others.append(entry.name)
        except FolderTooLarge:
            raise
        except OSError:
            continue  # os.walk leaves out a folder whose listing fails
        finally:
            os.close(fd)
        folders.sort()
        others.sort()
        found.append(Folder(path, folders, others))
        below = [name for name in folders if name not in linked]
        if below and depth >= max_depth:
            raise FolderTooLarge(top, os.path.join(path, below[0]), DEPTH, max_depth)
        pending.extend((os.path.join(path, name), depth + 1) for name in reversed(below))
    return found


def _is_folder(entry: os.DirEntry) -> bool:
    """As os.walk sorts entries: a link to a folder is a folder; one that cannot be followed is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False
