"""Output-directory validation: absolute, inside an allowed root (after `..` and symlinks), writable, roomy."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from mtm.shared.paths import is_within, resolved, roots_text
from mtm.shared.problems import Problem

PERMISSION_HINT = (
    "1. Check directory permissions: ls -la {path}  2. Ensure the portal's user (uid {uid}) has write access.  "
    "3. Create the directory if it doesn't exist."
)


@dataclass
class OutputDirCheck:
    output_directory: str
    path: str | None = None
    exists: bool = False
    writable: bool = False
    empty: bool | None = None
    will_create: bool = False
    free_bytes: int | None = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "output_directory": self.output_directory,
            "path": self.path,
            "valid": self.valid,
            "exists": self.exists,
            "writable": self.writable,
            "empty": self.empty,
            "will_create": self.will_create,
            "free_bytes": self.free_bytes,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
        }


def _write_probe(folder: str) -> OSError | None:
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".mtm-write-probe-")
    except OSError as exc:
        return exc
    os.close(fd)
    os.unlink(probe)
    return None


def _too_long(path: str) -> Problem | None:
    """A folder the filesystem could never create: a name over NAME_MAX bytes or a path over PATH_MAX."""
    name_max, path_max = 255, 4096
    longest = max(path.split(os.sep), key=lambda part: len(part.encode("utf-8", "surrogateescape")))
    size = len(longest.encode("utf-8", "surrogateescape"))
    if size > name_max:
        return Problem(
            "path_too_long",
            f"The folder name '{longest[:40]}…' is {size} bytes long; the filesystem allows {name_max}.",
            "Choose a shorter folder name.",
        )
    if len(path.encode("utf-8", "surrogateescape")) > path_max:
        return Problem(
            "path_too_long",
            f"The path is longer than the {path_max} bytes the system allows.",
            "Choose a shorter path.",
        )
    return None


def check_output_dir(raw: object, allowed_roots: list[str], low_disk_bytes: int = 10 * 1024**3) -> OutputDirCheck:
    text = raw if isinstance(raw, str) else ""
    result = OutputDirCheck(output_directory=text)
    if not text.strip():
        result.errors.append(
            Problem("not_absolute", "Output directory is empty.", "Give a full path such as /output/my-project.")
        )
        return result
    if "\x00" in text:
        result.errors.append(Problem("invalid_path", "Output directory contains a NUL character.", "Remove it."))
        return result
    if not os.path.isabs(text):
        result.errors.append(
            Problem(
                "not_absolute",
                f"Output directory '{text}' is not an absolute path.",
                f"Use a full path that starts with '/', inside one of the allowed roots: {roots_text(allowed_roots)}.",
            )
        )
        return result
    real = resolved(text)
    if real is None:
        result.errors.append(
            Problem(
                "output_directory_unresolvable",
                f"Output directory {text} cannot be resolved: a folder or link on its path cannot be followed "
                "(permission denied).",
                "Choose a folder of your own inside an allowed output root, with no links on its path.",
            )
        )
        return result
    result.path = real
    if not any(is_within(real, resolved(root) or os.path.normpath(root)) for root in allowed_roots):
        shown = text if os.path.normpath(text) == real else f"{text} (resolves to {real})"
        result.errors.append(
            Problem(
                "outside_allowed_roots",
                f"Output directory {shown} is outside the allowed output roots ({roots_text(allowed_roots)}).",
                "Choose a folder inside an allowed root, or ask staff to add a root under Settings → Directory Settings.",
            )
        )
        return result
    if problem := _too_long(real):
        result.errors.append(problem)
        return result
    existing = real
    if os.path.exists(real):
        result.exists = True
        if not os.path.isdir(real):
            result.errors.append(
                Problem(
                    "not_a_directory",
                    f"Output directory {real} exists and is not a directory.",
                    "Choose another path, or remove the file that is in the way.",
                )
            )
            return result
    else:
        result.will_create = True
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            result.errors.append(
                Problem(
                    "not_a_directory",
                    f"Cannot create {real}: {existing} is a file, not a directory.",
                    "Choose another path.",
                )
            )
            return result
    failure = _write_probe(existing)
    result.writable = failure is None
    if failure is not None:
        consequence = "" if result.exists else f", so {real} cannot be created"
        reason = failure.strerror or str(failure)
        result.errors.append(
            Problem(
                "permission_denied",
                f"Cannot write to directory {existing}{consequence}: {reason}.",
                PERMISSION_HINT.format(path=existing, uid=os.getuid()),
            )
        )
    if result.exists:
        with os.scandir(real) as entries:
            count = sum(1 for _ in entries)
        result.empty = count == 0
        if count:
            result.warnings.append(
                Problem(
                    "not_empty",
                    f"Output directory {real} already holds {count} entries.",
                    "Training writes checkpoints and the model here and may overwrite files with the same names.",
                )
            )
    result.free_bytes = shutil.disk_usage(existing).free
    if result.free_bytes < low_disk_bytes:
        result.warnings.append(
            Problem(
                "low_disk_space",
                f"Only {result.free_bytes / 1024**3:.1f} GiB free at {existing}.",
                f"Checkpoints of a large model need much more; free space or choose another root (warning below {low_disk_bytes / 1024**3:.0f} GiB).",
            )
        )
    return result
