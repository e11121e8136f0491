"""The one walk of a folder a member can fill (a snapshot, an override's or a published model's folder,
.no_exist/<commit>, refs/): mtm.shared.bounded_walk with a model's limits, which staff may change in the settings
MTM_MODEL_FOLDER_MAX_ENTRIES and MTM_MODEL_FOLDER_MAX_DEPTH."""

from __future__ import annotations

import os

from django.conf import settings

from mtm.shared.bounded_walk import Folder, FolderTooLarge, walk

__all__ = ["Folder", "FolderTooLarge", "walk_model_folder"]


def walk_model_folder(folder: str | os.PathLike) -> list[Folder]:
    """Every folder under `folder`, or FolderTooLarge past a model's limits (before anything in it is looked at)."""
    return walk(
        folder,
        max_entries=settings.MTM_MODEL_FOLDER_MAX_ENTRIES,
        max_depth=settings.MTM_MODEL_FOLDER_MAX_DEPTH,
    )
