"""Files that are git-lfs pointers (a few lines of text naming the real file's hash) instead of the file itself.

A `git clone` without git-lfs, or with GIT_LFS_SKIP_SMUDGE=1, leaves such pointers in place of every large file.
They are small, so only small files with a weights or tokenizer name are opened, and only their first bytes read.
"""

from __future__ import annotations

from pathlib import Path

from models_registry.regular_files import open_regular_file
from mtm.shared.problems import Problem

POINTER_PREFIX = b"version https://git-lfs"
MAX_POINTER_BYTES = 1024  # a pointer is ~130 bytes; no real weights or tokenizer file is this small
# What the Hub's default .gitattributes stores in LFS, and the large tokenizer files. Small JSON configs never are.
LFS_TRACKED = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".model", "tokenizer.json", "vocab.json", "merges.txt")


def is_lfs_pointer(path: Path, size: int | None) -> bool:
    if size is None or size > MAX_POINTER_BYTES or size < len(POINTER_PREFIX):
        return False
    try:
        with open_regular_file(path) as fh:
            return fh.read(len(POINTER_PREFIX)) == POINTER_PREFIX
    except OSError:
        return False


def take_lfs_pointers(usable: dict[str, Path], sizes: dict[str, int | None], model_name: str | None) -> list[Problem]:
    """A problem per pointer among the usable files; pointers are removed from `usable` so that no later check
    reports them again as corrupt JSON or weights."""
    problems = []
    for rel in sorted(usable):
        if not rel.endswith(LFS_TRACKED) or not is_lfs_pointer(usable[rel], sizes.get(rel)):
            continue
        del usable[rel]
        fetch = f"hf download {model_name}" if model_name else "copy the folder again from a complete source"
        problems.append(
            Problem(
                "lfs_pointer",
                f"{rel} is a git-lfs pointer ({sizes.get(rel)} bytes of text), not the file itself: the model was "
                "cloned without git-lfs.",
                f"Fetch the real files: run `git lfs install && git lfs pull` in the clone, or {fetch}.",
            )
        )
    return problems
