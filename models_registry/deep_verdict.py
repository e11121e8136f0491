"""The deep verdict: whether stock transformers, called as the trainer calls it, can load and train a model folder.

The instant rules (models_registry.checks) answer at once from file names and headers; this verdict asks
transformers itself (deep_verdict_child.examine) in a child process with CPU-time and memory limits, on a worker,
never in a web request. It is cached in ModelVerdict per folder and fingerprint: every file's name, size, mtime,
mode and blob name, the installed transformers/torch/tokenizers/peft, and the check's limits. A verdict is computed
again only when one of them changes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone
from pydantic import BaseModel, Field

from models_registry.checks import folder_too_large
from models_registry.folder_walk import FolderTooLarge, walk_model_folder
from models_registry.models import ModelVerdict
from models_registry.resolution import Resolution
from mtm.shared.limited_child import CPU, LimitExceeded, Limits, run_limited
from mtm.shared.problems import Problem

LIBRARIES = ("transformers", "torch", "tokenizers", "peft", "safetensors")
# Raised when the check itself learns something new (a cached verdict made by an older check is then made again).
CHECK_VERSION = 2


class DeepVerdict(BaseModel):
    """transformers' verdict on one folder. `valid`: it loads every weight from the checkpoint and its tokenizer
    encodes text to ids the model can embed, so one training step can run."""

    folder: str
    valid: bool
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    facts: dict = Field(default_factory=dict)
    checked_at: datetime
    versions: dict[str, str]
    fingerprint: str

    def first_error(self) -> Problem | None:
        return self.errors[0] if self.errors else None


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """The installed versions the verdict depends on (read from package metadata, without importing them)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def verdict_limits() -> Limits:
    return Limits(cpu_seconds=settings.MTM_VERDICT_CPU_SECONDS, memory_mb=settings.MTM_VERDICT_MEMORY_MB)


def _entry(root: str, full: str) -> list:
    rel = os.path.relpath(full, root)
    try:
        info = os.lstat(full)
    except OSError as exc:
        return [rel, "unlistable", exc.errno]
    target = ""
    if os.path.islink(full):
        try:
            target = os.readlink(full)
            info = os.stat(full)
        except OSError as exc:
            return [rel, target, "dangling", exc.errno]
    return [rel, target, info.st_size, info.st_mtime_ns, info.st_mode, info.st_uid]


def fingerprint(folder: str | Path, trust_remote_code: bool = False) -> str:
    """What the verdict on `folder` depends on, hashed: each file's name, link target (a cache's blob name), size,
    mtime, mode and owner (a chmod changes the verdict), plus the libraries, the trust setting, the check's version
    and its limits."""
    root = str(folder)
    entries: list[list] = []
    try:
        listed = walk_model_folder(root)
    except FolderTooLarge as exc:  # the instant check refuses such a folder before any verdict counts
        listed, entries = [], [["too large", exc.reason, exc.where]]
    for found in listed:
        links = [d for d in found.folders if os.path.islink(os.path.join(found.path, d))]
        for name in sorted(found.others + links):
            entries.append(_entry(root, os.path.join(found.path, name)))
    limits = verdict_limits()
    checked = [CHECK_VERSION, limits.cpu_seconds, limits.memory_mb, settings.MTM_TEMPLATE_CPU_SECONDS]
    material = [entries, library_versions(), bool(trust_remote_code), checked]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def folder_key(folder: str | Path) -> str:
    return hashlib.sha256(str(folder).encode()).hexdigest()


def _stopped(model_name: str, exc: LimitExceeded, limits: Limits) -> Problem:
    if exc.kind == CPU:
        return Problem(
            "verdict_too_slow",
            f"Checking model '{model_name}' with transformers took more than {limits.cpu_seconds} s of CPU time "
            "(or hung), so the check was stopped; the worker is unaffected.",
            "Its files may be damaged or hostile (a tokenizer or model code that never finishes): re-download it, "
            "or ask staff to raise MTM_VERDICT_CPU_SECONDS if the model is simply very large.",
        )
    return Problem(
        "verdict_out_of_memory",
        f"Checking model '{model_name}' with transformers needed more than {limits.memory_mb} MB of memory, or its "
        "check process crashed (a fault in a native library), so it was stopped; the worker is unaffected.",
        "Its files may be damaged or hostile: re-download it, or ask staff to raise MTM_VERDICT_MEMORY_MB if the "
        "model's tokenizer is simply very large.",
    )


def compute_verdict(folder: str | Path, *, trust_remote_code: bool = False, model_name: str = "") -> DeepVerdict:
    """transformers' verdict on `folder`, computed now in a limited child (not cached here); a folder past a model's
    limits is refused as the format check refuses it, without asking transformers."""
    folder = str(folder)
    name = model_name or folder
    stamp = fingerprint(folder, trust_remote_code)
    limits = verdict_limits()
    try:
        walk_model_folder(folder)
    except FolderTooLarge as exc:  # the format check refuses it unread: transformers is not asked either
        found = {"errors": [folder_too_large(exc, name).model_dump()], "warnings": [], "facts": {}}
    else:
        found = _examined(folder, trust_remote_code, name, limits)
    return DeepVerdict(
        folder=folder,
        valid=not found["errors"],
        errors=found["errors"],
        warnings=found["warnings"],
        facts=found["facts"],
        checked_at=timezone.now(),
        versions=library_versions(),
        fingerprint=stamp,
    )


def _examined(folder: str, trust_remote_code: bool, name: str, limits: Limits) -> dict:
    """What deep_verdict_child.examine finds in `folder`, or the problem that stopped it."""
    # Imported here, before the fork: the child starts with transformers loaded, and its memory limit counts what
    # the check allocates, not the libraries' code.
    from models_registry.deep_verdict_child import examine

    try:
        work = functools.partial(examine, folder, trust_remote_code, name, settings.MTM_TEMPLATE_CPU_SECONDS)
        found = run_limited(work, limits)
    except LimitExceeded as exc:
        found = {"errors": [_stopped(name, exc, limits).model_dump()], "warnings": [], "facts": {}}
    except RuntimeError as exc:
        problem = Problem(
            "verdict_failed",
            f"Checking model '{name}' with transformers failed: {exc}",
            "Check the model again; if it fails the same way, report it to the administrator with this message.",
        )
        found = {"errors": [problem.model_dump()], "warnings": [], "facts": {}}
    return found


def cached_verdict(folder: str | Path, trust_remote_code: bool = False) -> DeepVerdict | None:
    """The cached verdict on `folder` if its fingerprint still holds; None when never checked or changed since."""
    row = ModelVerdict.objects.filter(folder_key=folder_key(folder)).first()
    if row is None or row.fingerprint != fingerprint(folder, trust_remote_code):
        return None
    return DeepVerdict.model_validate(row.result)


def store_verdict(verdict: DeepVerdict) -> None:
    """Keep `verdict` as its folder's one cached verdict (two workers checking the same folder: either one wins)."""
    values = {
        "folder": verdict.folder,
        "fingerprint": verdict.fingerprint,
        "valid": verdict.valid,
        "result": verdict.model_dump(mode="json"),
        "checked_at": verdict.checked_at,
    }
    try:
        ModelVerdict.objects.update_or_create(folder_key=folder_key(verdict.folder), defaults=values)
    except IntegrityError:
        ModelVerdict.objects.filter(folder_key=folder_key(verdict.folder)).update(**values)


def verdict_for_folder(folder: str | Path, *, trust_remote_code: bool = False, model_name: str = "") -> DeepVerdict:
    """The cached verdict, or one computed now and cached. For workers only: computing loads transformers."""
    if (verdict := cached_verdict(folder, trust_remote_code)) is not None:
        return verdict
    verdict = compute_verdict(folder, trust_remote_code=trust_remote_code, model_name=model_name)
    if verdict.fingerprint == fingerprint(folder, trust_remote_code):  # not changed while it was checked
        store_verdict(verdict)
    return verdict


def deep_verdict(resolution: Resolution) -> DeepVerdict:
    """transformers' verdict on a resolved model: cached, or computed now (on a worker). A resolution without a
    folder gets its own errors back, uncached: there is nothing for transformers to read."""
    if resolution.path is None:
        return DeepVerdict(
            folder="",
            valid=False,
            errors=resolution.errors,
            checked_at=timezone.now(),
            versions=library_versions(),
            fingerprint="",
        )
    return verdict_for_folder(
        resolution.path, trust_remote_code=resolution.trust_remote_code, model_name=resolution.model_name
    )
