"""Whether a path saved as someone's still stands for what was saved there.

A project's output directory, a run's folder and an upload are stored resolved (no links on the path) and with
the identity (device and inode) of what stood there at save, when something did. A member with a shell can later
swap a folder on that path for a link, or for another folder. What the path leads to now is then not what was
claimed, so it claims nothing: a link to the output root must never shut every other member out of it. The saved
path itself still names the owner's problem (its own save and Start say what changed).

An override's folder is the exception: staff may save it as a link on purpose, so its identity is that of the
folder the link led to at save (`followed_identity`).
"""

from __future__ import annotations

import enum
import os
import stat

from mtm.shared.paths import resolved


class Standing(enum.Enum):
    INTACT = "intact"  # the saved thing is there, with no link on its path
    MISSING = "missing"  # nothing is there (not made yet, or removed): the saved path is still the claim
    LINKED = "linked"  # the path, or a folder on it, is now a link: it leads elsewhere
    REPLACED = "replaced"  # something else stands at the path now (another device or inode than at save)
    UNRESOLVABLE = "unresolvable"  # a link on the path cannot be followed: it leads somewhere unknown


def _identity_text(st: os.stat_result, disk: os.statvfs_result | None) -> str:
    """'device:inode', with ':fsid' (hex) added where the filesystem has an id: on another client of a shared (NFS)
    folder the same folder has another st_dev but the same filesystem id and inode."""
    fsid = disk.f_fsid & 0xFFFFFFFFFFFFFFFF if disk is not None else 0
    return f"{st.st_dev}:{st.st_ino}:{fsid:x}" if fsid else f"{st.st_dev}:{st.st_ino}"


def _disk(at: str | int) -> os.statvfs_result | None:
    try:
        return os.statvfs(at)
    except (OSError, ValueError):
        return None


def identity_of(path: str) -> str:
    """'device:inode[:fsid]' of what stands at `path` itself (a link is not followed and has no identity here: ''),
    or '' when nothing does."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return ""
    return "" if stat.S_ISLNK(st.st_mode) else _identity_text(st, _disk(path))


def identity_of_open(fd: int) -> str:
    """'device:inode[:fsid]' of the file or folder `fd` is open on."""
    return _identity_text(os.fstat(fd), _disk(fd))


def followed_identity(path: str) -> str:
    """'device:inode[:fsid]' of what `path` leads to (links followed), or '' when it leads nowhere that can be read."""
    try:
        return _identity_text(os.stat(path), _disk(path))
    except (OSError, ValueError):
        return ""


def same_identity(recorded: str, now: str) -> bool:
    """Whether two identities name the same file: (fsid, inode) where both carry a filesystem id, else (device,
    inode), so rows recorded before the filesystem id was still compare as they did. '' is nobody's identity."""
    a, b = recorded.split(":"), now.split(":")
    if len(a) < 2 or len(b) < 2 or not all(a) or not all(b):
        return False
    if len(a) == 3 and len(b) == 3:
        return (a[2], a[1]) == (b[2], b[1])
    return (a[0], a[1]) == (b[0], b[1])


def standing(stored: str, identity: str = "") -> tuple[Standing, str | None]:
    """How the saved path `stored` (resolved when saved) stands now, and where it leads now (None: unknown).
    `identity` is what identity_of answered at save ('': not recorded, so only links are looked for)."""
    normal = os.path.normpath(stored)
    now = resolved(normal)
    if now is None:
        return Standing.UNRESOLVABLE, None
    if now != normal:
        return Standing.LINKED, now
    found = identity_of(normal)
    if not found:
        return Standing.MISSING, now
    if identity and not same_identity(identity, found):
        return Standing.REPLACED, now
    return Standing.INTACT, now


def claim_form(stored: str, identity: str = "") -> str | None:
    """The path `stored` still claims (normalised), or None when it claims nothing now."""
    if not stored or not os.path.isabs(stored) or "\x00" in stored:
        return None
    state, _ = standing(stored, identity)
    return os.path.normpath(stored) if state in (Standing.INTACT, Standing.MISSING) else None
