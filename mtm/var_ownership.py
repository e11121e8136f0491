"""The portal's var folder and its secret key file belong to the portal's own user, or the portal does not start.

Whoever owns or may write in MTM_VAR_DIR can plant the secret key that signs every session (and so sign in as
staff), or the broker and result files; whoever may read the key file knows that key. So a var folder another user
made, or one that group or others may write in, is refused at start rather than adopted, and so is a key file that
another user owns or that group or others may read or write. Each refusal says what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from mtm.shared.file_modes import DIR_MODE


def own_var_dir(var_dir: Path) -> None:
    """Make `var_dir` (and its parents) where missing; ImproperlyConfigured unless it is a folder of this process's
    user that group and others may not write in."""
    for folder in reversed([var_dir, *var_dir.parents]):  # missing parents too get DIR_MODE, whatever the umask
        if not folder.exists():
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
            folder.chmod(DIR_MODE)
    info = var_dir.stat()
    uid = os.geteuid()
    fix = f"Make it the portal user's own folder (chown {uid} {var_dir}; chmod go-w {var_dir}), or set MTM_VAR_DIR to one."
    if info.st_uid != uid:
        raise ImproperlyConfigured(
            f"The var folder {var_dir} (MTM_VAR_DIR) is owned by uid {info.st_uid}, not by the portal's user (uid "
            f"{uid}): whoever owns it could plant the portal's secret key and files there. {fix}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ImproperlyConfigured(
            f"The var folder {var_dir} (MTM_VAR_DIR) may be written by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): they could plant the portal's secret key and files there. {fix}"
        )


def check_private_key_file(fd: int, key_file: Path) -> None:
    """ImproperlyConfigured unless the open file `fd` (the key file) is this process's user's and no one else's."""
    info = os.fstat(fd)
    uid = os.geteuid()
    remedy = (
        "Remove it (a new private key is then made, and everyone signs in again) or set SECRET_KEY; if you made it "
        f"yourself and no one else has read it, chown {uid} {key_file} and chmod 600 {key_file} instead."
    )
    if info.st_uid != uid:
        raise ImproperlyConfigured(
            f"The secret key file {key_file} is owned by uid {info.st_uid}, not by the portal's user (uid {uid}): "
            f"whoever made it knows the key that signs every session. {remedy}"
        )
    if info.st_mode & 0o077:
        raise ImproperlyConfigured(
            f"The secret key file {key_file} may be read or written by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): the key that signs every session must be private. {remedy}"
        )
