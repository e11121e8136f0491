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


def _identity_text(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def identity_of(path: str) -> str:
    """'device:inode' of what stands at `path` itself (a link is not followed and has no identity here: ''), or ''
    when nothing does."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return ""
    return "" if stat.S_ISLNK(st.st_mode) else _identity_text(st)


def identity_of_open(fd: int) -> str:
    """'device:inode' of the file or folder `fd` is open on."""
    return _identity_text(os.fstat(fd))


def followed_identity(path: str) -> str:
    """'device:inode' of what `path` leads to (links followed), or '' when it leads nowhere that can be read."""
    try:
        return _identity_text(os.stat(path))
    except (OSError, ValueError):
        return ""


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
    if identity and found != identity:
        return Standing.REPLACED, now
    return Standing.INTACT, now


def claim_form(stored: str, identity: str = "") -> str | None:
    """The path `stored` still claims (normalised), or None when it claims nothing now."""
    if not stored or not os.path.isabs(stored) or "\x00" in stored:
        return None
    state, _ = standing(stored, identity)
    return os.path.normpath(stored) if state in (Standing.INTACT, Standing.MISSING) else None
