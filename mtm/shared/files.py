"""File digests."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return handle_sha256(handle)


def handle_sha256(handle: BinaryIO) -> str:
    """The digest of what is left to read in an open file."""
    digest = hashlib.sha256()
    while block := handle.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()
