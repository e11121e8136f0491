"""Checks of the paths on the Settings page: the Model Cache Path and the allowed output and dataset roots.

`path_problem` is what refuses a value on save (it can never work: not absolute, a NUL, a file in the way);
the `check_*` functions report everything else a person wants to see while typing (exists, model folders,
writable, free space) and never refuse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from django.template.defaultfilters import filesizeformat

from models_registry.outputs import check_output_dir
from models_registry.resolution import hf_cache_dir
from mtm.shared.problems import Problem

MAX_PATH_CHARS = 4096
ROOT_KINDS = ("output", "dataset")


@dataclass
class PathReport:
    """What is known about one path: facts (good news), errors and warnings."""

    raw: str
    path: str | None = None
    facts: list[str] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def label(self) -> str:
        """The path to show: normalised when known, else as typed (escaped, so a NUL shows as \\x00)."""
        return self.path or shown(self.raw)


def shown(raw: str) -> str:
    return raw.encode("unicode_escape").decode("ascii")[:200]


def path_problem(raw: str, what: str) -> Problem | None:
    """Why `raw` can never be used as `what` (e.g. "Model Cache Path"), or None."""
    if "\x00" in raw:
        return Problem("invalid_path", f"{what} contains a NUL character.", "Remove it and give a plain folder path.")
    if len(raw) > MAX_PATH_CHARS:
        return Problem(
            "invalid_path",
            f"{what} is {len(raw)} characters long; the limit is {MAX_PATH_CHARS}.",
            "Use a shorter path.",
        )
    if not os.path.isabs(raw):
        return Problem(
            "not_absolute",
            f"{what} '{shown(raw)}' is not an absolute path.",
            "Give a full path that starts with '/'.",
        )
    path = Path(raw)
    if path.exists() and not path.is_dir():
        return Problem(
            "not_a_directory",
            f"{what} {path} exists and is not a directory.",
            "Give the path of a folder, or remove the file that is in the way.",
        )
    return None


def split_lines(text: str) -> list[str]:
    """One path a line; blank lines dropped, surrounding spaces stripped, duplicates kept once."""
    seen: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and line not in seen:
            seen.append(line)
    return seen


def _count_model_folders(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.startswith("models--"))


def check_cache_path(raw: str) -> PathReport:
    """The Model Cache Path as typed: blank means the Hugging Face default, which is shown."""
    raw = raw.strip()
    report = PathReport(raw=raw)
    if not raw:
        default, source = hf_cache_dir("")
        report.facts.append(f"Blank: the Hugging Face default is used, {default} (chosen by {source}).")
        folder = default
    else:
        if problem := path_problem(raw, "Model Cache Path"):
            report.errors.append(problem)
            return report
        folder = Path(raw)
    report.path = str(folder)
    if not folder.exists():
        report.warnings.append(
            Problem(
                "cache_missing",
                f"{folder} does not exist yet, so no model will be found there.",
                "Create it, or download a model into it: HF_HUB_CACHE=" + str(folder) + " hf download ORG/NAME",
            )
        )
        return report
    try:
        count = _count_model_folders(folder)
    except OSError as exc:
        report.errors.append(
            Problem(
                "permission_denied",
                f"Cannot list {folder}: {exc.strerror}.",
                f"Give the portal's user (uid {os.getuid()}) read access: ls -ld {folder}",
            )
        )
        return report
    report.facts.append(f"Directory exists and holds {count} model folder{'' if count == 1 else 's'} (models--*).")
    if count == 0:
        hub = folder / "hub"
        hint = "Download a model into it: hf download ORG/NAME, or run: python manage.py create_demo_model"
        if hub.is_dir() and _count_model_folders(hub):
            hint = f"The models seem to be one level down: use {hub} (huggingface_hub keeps them in HF_HOME/hub)."
        report.warnings.append(Problem("cache_empty", f"{folder} holds no models--* folders.", hint))
    return report


def check_root(raw: str, kind: str) -> PathReport:
    """One allowed root. Output roots get the write probe and free space of check_output_dir."""
    raw = raw.strip()
    what = f"Allowed {kind} root"
    report = PathReport(raw=raw)
    if problem := path_problem(raw, what):
        report.errors.append(problem)
        return report
    report.path = os.path.realpath(raw)
    if kind == "output":
        _check_output_root(report)
    else:
        _check_dataset_root(report)
    return report


def _check_output_root(report: PathReport) -> None:
    result = check_output_dir(report.path, [report.path])
    report.errors.extend(result.errors)
    report.warnings.extend(w for w in result.warnings if w.code != "not_empty")
    if not result.valid:
        return
    free = f", {filesizeformat(result.free_bytes)} free" if result.free_bytes is not None else ""
    if result.will_create:
        report.facts.append(f"Does not exist yet; it will be created on first use (parent is writable{free}).")
    else:
        report.facts.append(f"Directory exists and is writable{free}.")


def _check_dataset_root(report: PathReport) -> None:
    folder = Path(report.path)
    if not folder.exists():
        report.warnings.append(
            Problem(
                "root_missing",
                f"{folder} does not exist, so no dataset can be picked from it.",
                f"Create it: mkdir -p {folder}",
            )
        )
    elif not os.access(folder, os.R_OK | os.X_OK):
        report.errors.append(
            Problem(
                "permission_denied",
                f"Cannot read directory {folder}.",
                f"Give the portal's user (uid {os.getuid()}) read access: ls -ld {folder}",
            )
        )
    else:
        report.facts.append("Directory exists and is readable.")
