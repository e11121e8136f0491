"""Reading a cached repo's refs/<name> file as huggingface_hub writes it: a regular file holding a commit hash.

Members can write in the shared cache, so refs/main may be a link to any file the portal's user can read (another
member's upload, the secret key, /proc/self/environ). A ref is therefore opened without following a link, from a
refs/ folder that is not a link either, and what it holds is used, or named in a message, only when it is a commit
hash; otherwise the reason says what is wrong without quoting a byte of it.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

from models_registry.names import is_commit_hash
from mtm.shared.nofollow import DIR_FLAGS, FILE_FLAGS, LINK_ERRORS

MAX_REF_BYTES = 256  # a commit hash and a newline, with room to spare


class RefRead(NamedTuple):
    commit: str | None  # the commit hash the ref holds; None when it is missing or unusable
    mtime_ns: int  # the ref file's mtime (0 when it was not read)
    trouble: str  # why `commit` is None, quoting nothing the file holds ("" when it is a commit)


def read_ref(repo_dir: str, ref: str, *, dir_fd: int | None = None) -> RefRead:
    """The commit `repo_dir`/refs/`ref` names (`ref` may hold '/': refs/pr/1). `dir_fd`: `repo_dir` is relative to
    it. Every component below `repo_dir` is opened without following a link."""
    shown = f"refs/{ref}"
    opened: list[int] = []
    try:
        at = os.open(repo_dir, DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=dir_fd)
        opened.append(at)
        *folders, last = ["refs", *ref.split("/")]
        for part in folders:
            at = os.open(part, DIR_FLAGS, dir_fd=at)
            opened.append(at)
        fd = os.open(last, FILE_FLAGS, dir_fd=at)
        opened.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return RefRead(None, 0, f"{shown} is not a regular file")
        raw = os.read(fd, MAX_REF_BYTES + 1)
    except FileNotFoundError:
        return RefRead(None, 0, f"{shown} is missing")
    except PermissionError:
        return RefRead(None, 0, f"{shown} is unreadable by the portal's user")
    except OSError as exc:
        if exc.errno in LINK_ERRORS:
            return RefRead(None, 0, f"{shown} is a link or lies under one (a ref is a plain file)")
        return RefRead(None, 0, f"{shown} cannot be read ({errno.errorcode.get(exc.errno or 0, 'error')})")
    finally:
        for fd in reversed(opened):
            os.close(fd)
    value = raw.decode("ascii", "replace").strip()
    if len(raw) > MAX_REF_BYTES or not is_commit_hash(value):
        return RefRead(None, st.st_mtime_ns, f"{shown} does not hold a commit hash")
    return RefRead(value, st.st_mtime_ns, "")
