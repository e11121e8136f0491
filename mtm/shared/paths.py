"""Path containment and how a list of allowed roots is named in a message."""

from __future__ import annotations

import os


def is_within(path: str, root: str) -> bool:
    """True when `path` is `root` or below it. Both must already be normalised (realpath)."""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def roots_text(roots: list[str]) -> str:
    return ", ".join(roots) if roots else "none configured"


def resolved(path: str) -> str | None:
    """`path` with links and `..` resolved, or None when a component cannot be followed (a link the portal may
    not read, such as /proc/<pid>/cwd of another process)."""
    try:
        return os.path.realpath(path)
    except OSError:
        return None
