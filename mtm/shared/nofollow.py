"""Opening a file or folder by a path that is already resolved, without following any link on the way.

A path checked with realpath can be swapped for a link before it is opened; walking every component with
O_NOFOLLOW makes such an open fail (ELOOP or ENOTDIR) instead of reaching whatever the link points at.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection

# A folder or a file opened for reading without following a link; a file non-blocking, so a FIFO cannot hang the
# caller (check S_ISREG before reading).
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
LINK_ERRORS = (errno.ELOOP, errno.ENOTDIR, errno.EEXIST)


class ForeignFolder(OSError):
    """A folder on the way that belongs to a user the caller does not trust (EPERM); `folder` is its path."""

    def __init__(self, folder: str, uid: int):
        super().__init__(errno.EPERM, f"owned by uid {uid}", folder)
        self.folder, self.uid = folder, uid


def open_dir_nofollow(
    path: str,
    *,
    create: bool = False,
    mode: int | None = None,
    owners: Collection[int] | None = None,
    owned_below: str = "/",
) -> int:
    """A descriptor of the folder `path` (absolute), reached without following any link; missing folders are
    created when `create` (mkdirat never follows a link either), with `mode` whatever the umask when given (else
    0o777 less the umask). OSError with ELOOP or ENOTDIR when a component is a link or a file. With `owners`, every
    folder strictly below `owned_below` (`path` or a folder above it; `path` itself included) must belong to one of
    them, as its descriptor shows: ForeignFolder names the first that does not, and nothing is made inside it."""
    parts = [p for p in path.split(os.sep) if p]
    trusted_from = len([p for p in owned_below.split(os.sep) if p])  # index of the first folder below owned_below
    fd = os.open("/", DIR_FLAGS if not parts else _PATH_FLAGS)
    try:
        for index, part in enumerate(parts):
            # Folders on the way are only passed through (O_PATH needs search permission, not read); one made here
            # is opened for reading, so that its mode can be set through its descriptor.
            flags = DIR_FLAGS if index == len(parts) - 1 else _PATH_FLAGS
            made = False
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777 if mode is None else mode, dir_fd=fd)
                    made = True
                except FileExistsError:
                    if owners is None:
                        raise
                    # Made by someone else meanwhile: its owner, checked below, decides.
                child = os.open(part, DIR_FLAGS if made else flags, dir_fd=fd)
            os.close(fd)
            fd = child
            if owners is not None and index >= trusted_from and (owner := os.fstat(fd).st_uid) not in owners:
                raise ForeignFolder(os.sep + os.sep.join(parts[: index + 1]), owner)
            if made and mode is not None and os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file_nofollow(path: str) -> int:
    """A read descriptor of the regular file `path`, reached without following any link; OSError with EINVAL
    when it is not a regular file (a FIFO is opened non-blocking, so it cannot hang the caller)."""
    folder = open_dir_nofollow(os.path.dirname(path))
    try:
        fd = os.open(os.path.basename(path), FILE_FLAGS, dir_fd=folder)
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_up_to(fd: int, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the open file `fd` from where it stands (blocking): one byte more than `limit`
    tells the caller the file is longer."""
    os.set_blocking(fd, True)
    chunks, size = [], 0
    while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_owned_at(dir_fd: int, name: str, limit: int) -> bytes:
    """The content of `name` in `dir_fd` when it is what the worker itself wrote there: a regular file (not through a
    link: ELOOP), owned by this process's user, with no other name (one link), at most `limit` bytes. OSError EPERM
    names what else it is; EFBIG when it is longer."""
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EPERM, "not a regular file", name)
        if info.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"owned by uid {info.st_uid}, not by the worker's", name)
        if info.st_nlink != 1:
            raise OSError(errno.EPERM, f"has {info.st_nlink} hard links (another name for a file elsewhere)", name)
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", name)
        data = read_up_to(fd, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", name)
    return data
