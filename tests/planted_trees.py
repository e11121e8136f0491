"""Deep folder trees a member plants, built without recursion (pathlib and os.makedirs would walk the whole path each
level), and removed with GNU rm, which walks without recursing (pytest's own cleanup would raise RecursionError)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def nest_folders(top: Path, levels: int) -> None:
    """Make `levels` folders named `a`, each inside the last, under the existing folder `top`."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("a", dir_fd=fd)
            below = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
    finally:
        os.close(fd)


def remove_planted(paths: list[Path]) -> None:
    if paths:
        subprocess.run(["rm", "-rf", "--", *map(str, paths)], check=True)
