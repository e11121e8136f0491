"""The secret key the portal keeps in var/ when SECRET_KEY is not set: made private from its first byte (0600 when
created, whatever the umask), never written or read through a link planted at its name, and kept when it exists.

Each test starts the settings module in a fresh Python process, as `make run` or a worker does."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRINT_KEY = "import mtm.settings as s; print(s.SECRET_KEY)"


def load_settings(var_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["MTM_VAR_DIR"] = str(var_dir)
    return subprocess.run(
        [sys.executable, "-c", f"import os; os.umask(0); {PRINT_KEY}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_new_key_file_is_private_and_is_kept(tmp_path):
    started = load_settings(tmp_path)  # with umask 0 a file made by path would be 0666 until narrowed
    assert started.returncode == 0, started.stderr
    key_file = tmp_path / "secret_key"
    info = key_file.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_nlink == 1
    key = started.stdout.strip()
    assert len(key) > 40 and key_file.read_text() == key
    assert not [p.name for p in tmp_path.iterdir() if "secret_key" in p.name and p.name != "secret_key"]  # none staged
    again = load_settings(tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == key


def test_a_link_planted_at_the_key_files_name_is_not_written_through(tmp_path):
    """A member who can write in var/ plants a dangling link where the key goes, to a file she can read."""
    var_dir, hers = tmp_path / "var", tmp_path / "hers"
    var_dir.mkdir()
    hers.mkdir()
    (var_dir / "secret_key").symlink_to(hers / "stolen_key")
    started = load_settings(var_dir)
    assert not (hers / "stolen_key").exists()  # no key was written where the link leads
    assert started.returncode != 0 and not started.stdout.strip()
    assert f"{var_dir / 'secret_key'} cannot be read as the portal's secret key" in started.stderr
    assert "not a link" in started.stderr and "set SECRET_KEY" in started.stderr
