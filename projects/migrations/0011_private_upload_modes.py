"""Uploads stored with the umask's modes (files 0644, folders 0755) get the private ones the portal writes uploads
with (mtm.shared.file_modes: PRIVATE_FILE_MODE for the file, PRIVATE_DIR_MODE for its folder).

Only the layout the portal writes is touched: each folder directly in MEDIA_ROOT/datasets, and each regular file
directly in one of those. Every entry is opened relative to its folder's descriptor without following a link, and
narrowed through that descriptor, so a link (to a folder or a file anywhere) is never followed. A file with another
name (a hard link: the other name may lie outside the uploads folder), one that is not a regular file, and one this
process's user does not own are left as they are. Running it again changes nothing.
"""

import os
import stat

from django.conf import settings
from django.db import migrations

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_ENTRY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO opens without waiting


def _open_at(name, folder_fd, flags=0):
    """A descriptor of the entry `name` of `folder_fd`, never through a link; None when it cannot be opened."""
    try:
        return os.open(name, _ENTRY_FLAGS | flags, dir_fd=folder_fd)
    except OSError:  # ELOOP: a link; ENOTDIR: a file where a folder was asked for; gone or unreadable
        return None


def _narrow(fd, mode, want_type):
    """Give the entry open at `fd` the `mode` when it is of `want_type`, this user's, and has no other name. An
    entry that cannot be changed (a read-only disk) is left as it is: the portal still starts."""
    try:
        info = os.fstat(fd)
        if stat.S_IFMT(info.st_mode) != want_type or info.st_uid != os.geteuid():
            return
        if want_type == stat.S_IFREG and info.st_nlink != 1:
            return
        if stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)
    except OSError:
        return


def _names(folder_fd):
    try:
        return os.listdir(folder_fd)
    except OSError:
        return []


def _narrow_entry(name, folder_fd, mode, want_type):
    """Narrow the entry `name` of `folder_fd` (see _narrow); for a folder, then each of its own entries' files."""
    fd = _open_at(name, folder_fd, os.O_DIRECTORY if want_type == stat.S_IFDIR else 0)
    if fd is None:
        return
    try:
        _narrow(fd, mode, want_type)
        if want_type == stat.S_IFDIR:
            for inner in _names(fd):
                _narrow_entry(inner, fd, PRIVATE_FILE_MODE, stat.S_IFREG)
    finally:
        os.close(fd)


def narrow_upload_modes(apps, schema_editor):
    root = os.path.join(settings.MEDIA_ROOT, "datasets")
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # no uploads here
    try:
        for folder in _names(root_fd):
            _narrow_entry(folder, root_fd, PRIVATE_DIR_MODE, stat.S_IFDIR)
    finally:
        os.close(root_fd)


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0010_run_folder_identity"),
    ]

    operations = [
        migrations.RunPython(narrow_upload_modes, migrations.RunPython.noop),
    ]
