"""A var folder or a secret key file that another user made, or that group or others may write (or, the key, read),
is refused at start with an error saying what is wrong and what to do: never adopted, so no other account can plant
or learn the key that signs every session.

Each test starts the settings module in a fresh Python process, as `make run` or a worker does; the tests run as
root, so a file or folder is given to another user with os.chown."""

from __future__ import annotations

import os

from tests.test_secret_key_file import load_settings

OTHER_UID = 65534  # nobody


def _var_with_key(tmp_path, key: str = "mallory-knows-this-key", mode: int = 0o600):
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o755)
    key_file = var_dir / "secret_key"
    key_file.write_text(key)
    key_file.chmod(mode)
    return var_dir, key_file


def test_a_key_file_another_user_owns_is_refused(tmp_path):
    var_dir, key_file = _var_with_key(tmp_path)
    os.chown(key_file, OTHER_UID, OTHER_UID)
    started = load_settings(var_dir)
    assert started.returncode != 0 and "mallory-knows-this-key" not in started.stdout
    assert f"The secret key file {key_file} is owned by uid {OTHER_UID}" in started.stderr
    assert "Remove it" in started.stderr and "set SECRET_KEY" in started.stderr


def test_a_key_file_others_may_read_is_refused(tmp_path):
    var_dir, key_file = _var_with_key(tmp_path, mode=0o644)
    started = load_settings(var_dir)
    assert started.returncode != 0 and "mallory-knows-this-key" not in started.stdout
    assert f"The secret key file {key_file} may be read or written by group or others (mode 0644)" in started.stderr
    assert "chmod 600" in started.stderr


def test_the_portals_own_private_key_file_is_used(tmp_path):
    var_dir, _ = _var_with_key(tmp_path, key="the-portals-own-key")
    started = load_settings(var_dir)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "the-portals-own-key"


def test_a_var_folder_another_user_made_is_refused(tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o755)
    os.chown(var_dir, OTHER_UID, OTHER_UID)
    started = load_settings(var_dir)
    assert started.returncode != 0 and not started.stdout.strip()
    assert f"The var folder {var_dir} (MTM_VAR_DIR) is owned by uid {OTHER_UID}" in started.stderr
    assert "set MTM_VAR_DIR" in started.stderr
    assert not (var_dir / "secret_key").exists()  # nothing of the portal's was written into it


def test_a_var_folder_others_may_write_in_is_refused(tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    var_dir.chmod(0o1777)
    started = load_settings(var_dir)
    assert started.returncode != 0 and not started.stdout.strip()
    assert f"The var folder {var_dir} (MTM_VAR_DIR) may be written by group or others (mode 1777)" in started.stderr
    assert "chmod go-w" in started.stderr
    assert not (var_dir / "secret_key").exists()


def test_a_missing_var_folder_is_made_the_portals_own(tmp_path):
    var_dir = tmp_path / "new" / "var"
    started = load_settings(var_dir)  # with umask 0, as load_settings runs it
    assert started.returncode == 0, started.stderr
    for folder in (var_dir, var_dir.parent):
        info = folder.stat()
        assert info.st_uid == os.geteuid() and info.st_mode & 0o022 == 0, folder
