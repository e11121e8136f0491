"""Output-directory validation: absolute, inside an allowed root (after `..` and symlinks), writable, roomy, and
never a folder someone else owns.

Members may have shell accounts of their own on the server, while the portal and its workers run as one service
user. Whoever owns a folder can rename and replace what the worker writes inside it, so a folder below an allowed
root that already exists (the output directory itself or one on its way) must belong to the portal's user, the
user that creates every folder it trains in, or to root (an administrator's); anyone else's is refused, never
adopted. The allowed root itself is staff's choice and may belong to anyone.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile

from pydantic import BaseModel, ConfigDict, Field, computed_field

from models_registry.name_bytes import encodes, path_not_utf8_problem
from mtm.shared.paths import is_within, resolved, roots_text
from mtm.shared.problems import Problem

PERMISSION_HINT = (
    "1. Check directory permissions: ls -la {path}  2. Ensure the portal's user (uid {uid}) has write access.  "
    "3. Create the directory if it doesn't exist."
)


class OutputDirCheck(BaseModel):
    """Whether training may write in a folder; the API answers it as it is (model_dump)."""

    # Every field is in every answer: the API schema says so.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    output_directory: str
    path: str | None = None
    exists: bool = False
    writable: bool = False
    empty: bool | None = None
    will_create: bool = False
    free_bytes: int | None = None
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)

    @computed_field
    @property
    def valid(self) -> bool:
        return not self.errors


def _write_probe(folder: str) -> OSError | None:
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".mtm-write-probe-")
    except OSError as exc:
        return exc
    os.close(fd)
    os.unlink(probe)
    return None


FOREIGN_OWNER = "output_directory_foreign_owner"
FOREIGN_HINT = (
    "Pick a path that does not exist yet: the worker creates it, owned by the portal's user. If the folder is "
    "meant for the portal, ask staff to give it to the portal's user (chown {uid} {folder}) or to remove it."
)


def trusted_owners() -> frozenset[int]:
    """Who may own an existing folder the portal writes in: its own user and root."""
    return frozenset({os.geteuid(), 0})


def _user_name(uid: int) -> str:
    try:
        return f"user '{pwd.getpwuid(uid).pw_name}' (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _foreign_owner(real: str, roots: list[str]) -> Problem | None:
    """The first folder that exists from `real` up to (not including) the allowed root it lies in and belongs to
    someone other than the portal's user or root, as a Problem; None when there is none."""
    trusted = trusted_owners()
    folder = real
    while folder not in roots and any(is_within(folder, root) for root in roots):
        try:
            info = os.lstat(folder)
        except OSError:
            info = None  # not made yet: the worker makes it
        if info is not None and info.st_uid not in trusted:
            return foreign_owner_problem(real, folder, info.st_uid)
        folder = os.path.dirname(folder)
    return None


def foreign_owner_problem(output_dir: str, folder: str, owner: int) -> Problem:
    """`folder` (the output directory itself or one it is inside) belongs to `owner`, who is not a trusted owner."""
    where = "already exists and" if folder == output_dir else f"is inside {folder}, which"
    return Problem(
        FOREIGN_OWNER,
        f"Output directory {output_dir} {where} belongs to {_user_name(owner)}, not to the portal's user "
        f"(uid {os.geteuid()}): whoever owns a folder can replace the run folders and files the worker "
        "writes in it, so the portal does not adopt one it did not make.",
        FOREIGN_HINT.format(uid=os.geteuid(), folder=folder),
    )


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
    if not encodes(real):
        result.errors.append(path_not_utf8_problem("Output directory", text, real))
        return result
    result.path = real
    roots = [resolved(root) or os.path.normpath(root) for root in allowed_roots]
    if not any(is_within(real, root) for root in roots):
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
    if problem := _foreign_owner(real, roots):
        result.errors.append(problem)
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
                    f"Output directory {real} already holds {count} {'entry' if count == 1 else 'entries'}.",
                    "Nothing in it is overwritten: each run writes into a new folder of its own inside it "
                    "(run-<run id>).",
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
