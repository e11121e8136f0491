"""Opening a file of a model folder or cache entry only when it is a regular file.

Whoever can write in the cache can put a FIFO, a socket or a device where a config.json belongs. A plain open()
of a FIFO waits for a writer forever, and the page or API call that reads it hangs with it. Here the file is
opened with O_NONBLOCK (which returns at once for a FIFO and changes nothing for a regular file) and refused
unless fstat says it is a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


class NotRegularFile(OSError):
    """The path leads to something other than a regular file; strerror says what it is."""


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, *, follow: bool = True) -> int:
    """A read descriptor of the regular file `path` (not through a final link unless `follow`); NotRegularFile
    for anything else, without ever waiting on it."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, f"it is {kind_of(mode)}, not a regular file", str(path))
    return fd


def open_regular_file(path: str | os.PathLike, *, follow: bool = True) -> BinaryIO:
    """open_regular as a binary file object."""
    return os.fdopen(open_regular(path, follow=follow), "rb")


def read_regular(path: str | os.PathLike, limit: int, *, follow: bool = True) -> bytes:
    """At most `limit` + 1 bytes of the regular file `path` (one more than allowed shows that it is too large)."""
    with open_regular_file(path, follow=follow) as fh:
        return fh.read(limit + 1)
