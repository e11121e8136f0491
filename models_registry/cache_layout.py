"""What a Hugging Face cache records besides snapshots: `.no_exist` markers, interrupted downloads, and other
repos whose names come close to the one asked for. Each is read only when a check needs it."""

from __future__ import annotations

import os
from pathlib import Path

from models_registry.folder_walk import walk_model_folder
from models_registry.names import repo_folder_name

PARTIAL_SUFFIX = ".incomplete"


def hub_absent_files(repo_dir: Path, commit: str) -> frozenset[str]:
    """Files huggingface_hub recorded as absent from the Hub at `commit` (empty files under .no_exist/<commit>/).
    Empty when the record cannot be read or is larger than a model's folder (FolderTooLarge): it only words messages."""
    base = repo_dir / ".no_exist" / commit
    try:
        listed = walk_model_folder(base)
        return frozenset(Path(f.path, name).relative_to(base).as_posix() for f in listed for name in f.others)
    except (OSError, ValueError):
        return frozenset()


def split_partial_blobs(partial: list[str], snapshot: Path, complete: bool) -> tuple[list[str], list[str]]:
    """(partial blobs that belong to the chosen snapshot, leftovers of other files or revisions).

    huggingface_hub links a file into the snapshot only once its blob is complete, so an interrupted download of
    one of the snapshot's files shows as a file missing from it: all partial blobs count while the snapshot is
    not `complete` (it has errors, or no weights). Otherwise only those a snapshot link points at count (a copy
    that made the link first). Read only when partial blobs exist: one readlink per snapshot file. FolderTooLarge (an
    OSError) when the snapshot holds more than a model's folder can."""
    if not complete:
        return list(partial), []
    wanted: set[str] = set()
    for folder in walk_model_folder(snapshot):
        for fname in folder.others:
            try:
                wanted.add(os.path.basename(os.readlink(os.path.join(folder.path, fname))))
            except OSError:
                continue
    referenced = [p for p in partial if p[: -len(PARTIAL_SUFFIX)] in wanted]
    return referenced, [p for p in partial if p not in referenced]


def near_names(cache_dir: Path, name: str) -> list[str]:
    """Sentences about cache entries that may be what the user meant: the same name in another case, or a dataset
    repo of that name. Only read when a model is not found."""
    wanted = repo_folder_name(name)
    try:
        entries = os.listdir(cache_dir)
    except OSError:
        return []
    notes = []
    same_but_case = sorted(e for e in entries if e.lower() == wanted.lower() and e != wanted)
    for entry in same_but_case:
        other = "/".join(entry[len("models--") :].split("--"))
        notes.append(f"Did you mean '{other}'? The cache holds {entry}; names are case-sensitive here.")
    dataset = "datasets--" + wanted[len("models--") :]
    if dataset in entries:
        notes.append(
            f"The cache holds a dataset repo of that name ({dataset}), not a model: a dataset cannot be trained on "
            "as a base model."
        )
    return notes
