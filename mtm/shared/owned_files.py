"""Writing inside a folder the portal created and holds open, never through a link someone planted in it.

Files are created relative to the folder's descriptor: either directly (O_CREAT|O_EXCL|O_NOFOLLOW), or, for a
library that writes by path (save_pretrained, the Trainer's checkpoints), inside a private staging folder (mode
0700, made by the portal) whose tree is then checked (only folders and regular files, each with a single link),
given the portal's modes and renamed into place without replacing anything that is already there.

Modes (declared in mtm/shared/file_modes.py): every file a run writes is FILE_MODE (0644) and every folder DIR_MODE
(0755): the team reads a run's weights as it reads its config, and only the worker's user writes. A staging folder
is 0700 until its entries are moved out. No Django here: the trainer child imports this too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat

from mtm.shared.file_modes import DIR_MODE, FILE_MODE
from mtm.shared.nofollow import DIR_FLAGS, FILE_FLAGS
from mtm.shared.tree_removal import remove_entry

STAGING_PREFIX = ".staging-"
_RENAME_NOREPLACE = 1


class UnsafeEntry(OSError):
    """An entry that may not be moved into a run folder (a link, a hard link, a device or FIFO), or a name that is
    already taken there. `name` is the path relative to the folder."""

    def __init__(self, name: str, why: str):
        super().__init__(errno.EPERM, f"{name}: {why}")
        self.name = name
        self.why = why


def open_subdir(dir_fd: int, name: str) -> int:
    """A descriptor of the folder `name` inside `dir_fd`, never through a link (OSError ELOOP/ENOTDIR otherwise)."""
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def make_staging(dir_fd: int) -> str:
    """A new private folder (0700) inside `dir_fd` with a name nobody could have guessed; its name."""
    name = f"{STAGING_PREFIX}{secrets.token_hex(8)}"
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    return name


def open_private(dir_fd: int, name: str) -> int:
    """A descriptor of the private folder `name` inside `dir_fd`, created (0700) when missing. Refused (UnsafeEntry)
    when it is a link or a folder that another user owns or others may enter: then someone else made it."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    try:
        fd = open_subdir(dir_fd, name)
    except OSError:
        raise UnsafeEntry(name, "is a link or not a folder") from None
    info = os.fstat(fd)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        os.close(fd)
        raise UnsafeEntry(name, f"is not a private folder of uid {os.getuid()}")
    return fd


def seal(dir_fd: int, name: str) -> None:
    """Check the entry `name` of `dir_fd` and everything under it: only folders and regular files with one link
    each; give them FILE_MODE and DIR_MODE. UnsafeEntry names the first entry that is anything else."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(info.st_mode):
        fd = open_subdir(dir_fd, name)
        try:
            if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (info.st_dev, info.st_ino):
                raise UnsafeEntry(name, "changed while it was checked")
            for child in os.listdir(fd):
                try:
                    seal(fd, child)
                except UnsafeEntry as bad:
                    raise UnsafeEntry(f"{name}/{bad.name}", bad.why) from None
            os.fchmod(fd, DIR_MODE)
        finally:
            os.close(fd)
        return
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeEntry(name, "is a link or not a regular file")
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_ino != info.st_ino:
            raise UnsafeEntry(name, "changed while it was checked")
        if now.st_nlink != 1:
            raise UnsafeEntry(name, f"has {now.st_nlink} hard links (another name for a file elsewhere)")
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def _renameat2(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is None:
        raise OSError(errno.ENOSYS, "renameat2")
    if call(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), dst)


def place(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename `src` (in `src_fd`) to `dst` (in `dst_fd`), never replacing an entry already called `dst`: UnsafeEntry
    then. RENAME_NOREPLACE where the filesystem has it; elsewhere the name is looked up first."""
    try:
        _renameat2(src_fd, src, dst_fd, dst)
        return
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise UnsafeEntry(dst, "already exists in the run folder; nothing was written over it") from None
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise UnsafeEntry(dst, "already exists in the run folder; nothing was written over it")


def move_into_place(src_fd: int, name: str, dst_fd: int, dest: str | None = None) -> None:
    """Seal `name` of the staging folder `src_fd` and rename it to `dest` (default `name`) in `dst_fd`."""
    seal(src_fd, name)
    place(src_fd, name, dst_fd, dest or name)


def move_all_into_place(src_fd: int, dst_fd: int) -> list[str]:
    """Move every entry of the staging folder `src_fd` into `dst_fd` as move_into_place does, each checked before
    the first is moved; the names moved."""
    names = sorted(os.listdir(src_fd))
    for name in names:
        seal(src_fd, name)
    for name in names:
        place(src_fd, name, dst_fd, name)
    return names


def write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Create the file `name` in `dir_fd` with `data`: never an existing name, never through a link."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove `name` (a folder, with what it holds, or a file) from `dir_fd` without following links; nothing when
    it is gone already (mtm.shared.tree_removal: no nesting makes it fail, and it stops past a bound, saying so)."""
    remove_entry(dir_fd, name)
