"""A run's mtm_manifest.json, read from the run's opened folder without following a link. The trainer writes it last,
once save_pretrained has returned for the final model and tokenizer (projects.trainer.outputs): a manifest that
names its layout and when it finished says the run's result was written whole, whatever became of the trainer
process after that."""

from __future__ import annotations

import json
import os
from typing import Any

from mtm.shared.nofollow import FILE_FLAGS
from projects.trainer.outputs import MANIFEST_NAME

MANIFEST_LIMIT = 32 * 1024 * 1024


class ManifestMissing(Exception):
    pass


class ManifestInvalid(Exception):
    pass


def read_manifest(folder_fd: int) -> dict[str, Any]:
    """The manifest in the folder `folder_fd` is open on. ManifestMissing when there is none (or it is a link or no
    regular file), ManifestInvalid when it is not a JSON object."""
    try:
        fd = os.open(MANIFEST_NAME, FILE_FLAGS, dir_fd=folder_fd)
    except OSError:
        raise ManifestMissing(MANIFEST_NAME) from None
    try:
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MANIFEST_LIMIT + 1)
        manifest = json.loads(raw) if len(raw) <= MANIFEST_LIMIT else None
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        raise ManifestInvalid(MANIFEST_NAME)
    return manifest


def finished_writing(manifest: dict[str, Any]) -> bool:
    """Whether the manifest is the one the trainer writes after its final model: a layout and a finish time."""
    layout = manifest.get("layout")
    return isinstance(layout, dict) and "model_dir" in layout and bool(manifest.get("finished_at"))


def written_manifest(folder_fd: int) -> dict[str, Any] | None:
    """The folder's manifest when it says the run's result was written whole; None otherwise."""
    try:
        manifest = read_manifest(folder_fd)
    except (ManifestMissing, ManifestInvalid):
        return None
    return manifest if finished_writing(manifest) else None


def drop_manifest(folder_fd: int) -> bool:
    """Remove a manifest left in the folder before its trainer starts, so that one found afterwards is this run's.
    False when one is there and could not be removed (then none found later may be trusted)."""
    try:
        os.unlink(MANIFEST_NAME, dir_fd=folder_fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
