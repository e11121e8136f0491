"""Where a dataset may come from: a server path inside an allowed root, or an upload stored under MEDIA_ROOT."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from django.core.files.move import file_move_safe
from pydantic import BaseModel, Field, computed_field

from models_registry.name_bytes import encodes, path_not_utf8_problem
from models_registry.regular_files import NotRegularFile, open_regular_file
from mtm.shared.file_modes import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from mtm.shared.paths import is_within, resolved, roots_text
from mtm.shared.problems import Problem
from mtm.shared.tree_removal import remove_path
from projects.datasets.errors import (
    DATASET_EMPTY,
    DATASET_NOT_FOUND,
    DATASET_REQUIRED,
    DATASET_TOO_LARGE,
    DATASET_UNREADABLE,
    INVALID_PATH,
    NOT_A_FILE,
    NOT_ABSOLUTE,
    OUTSIDE_ALLOWED_ROOTS,
    UPLOAD_BAD_EXTENSION,
    UPLOAD_BAD_NAME,
    DatasetError,
    human_bytes,
)
from projects.datasets.loading import DEFAULT_MAX_BYTES

UPLOAD_EXTENSIONS = (".jsonl", ".json", ".csv")
UPLOAD_SUBDIR = "datasets"
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 100
_CHUNK = 1024 * 1024
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# Said for the dataset and the eval file alike: the form uploads the dataset; an eval file goes through the API.
UPLOAD_IT = "upload it (Upload on the form's Dataset box, or POST /api/v1/datasets) and give the path it is stored at"


def uploads_root() -> Path:
    """MEDIA_ROOT/datasets: uploads are stored here and are always an allowed dataset location."""
    from django.conf import settings

    return Path(settings.MEDIA_ROOT) / UPLOAD_SUBDIR


class DatasetPathCheck(BaseModel):
    """Whether a dataset path names a file training may read, and where it lies."""

    dataset_path: str
    path: str | None = None
    size_bytes: int | None = None
    uploaded: bool = False
    errors: list[Problem] = Field(default_factory=list)

    @computed_field
    @property
    def valid(self) -> bool:
        return not self.errors


def check_dataset_path(
    raw_path: object,
    allowed_roots: Iterable[str | os.PathLike],
    *,
    upload_root: str | os.PathLike | None = None,
) -> DatasetPathCheck:
    """Is `raw_path` an existing, readable, non-empty regular file inside an allowed dataset root (after `..` and
    symlinks are resolved) or inside the uploads folder? `upload_root` defaults to MEDIA_ROOT/datasets."""
    text = raw_path if isinstance(raw_path, str) else ""
    result = DatasetPathCheck(dataset_path=text)
    roots = [str(root) for root in allowed_roots if str(root).strip() and os.path.isabs(str(root))]
    uploads = os.path.realpath(upload_root if upload_root is not None else uploads_root())
    if not text.strip():
        result.errors.append(
            Problem(
                DATASET_REQUIRED,
                "No dataset given.",
                f"Upload a file, or give the full path of one inside an allowed root ({roots_text(roots)}).",
            )
        )
        return result
    if "\x00" in text:
        result.errors.append(Problem(INVALID_PATH, "Dataset path contains a NUL character.", "Remove it."))
        return result
    if not os.path.isabs(text):
        result.errors.append(
            Problem(
                NOT_ABSOLUTE,
                f"Dataset path '{text}' is not an absolute path.",
                f"Use a full path that starts with '/', inside one of the allowed roots: {roots_text(roots)}.",
            )
        )
        return result
    real = resolved(text)
    if real is None:
        result.errors.append(
            Problem(
                DATASET_UNREADABLE,
                f"Dataset path {text} cannot be resolved: a folder or link on its path cannot be followed "
                "(permission denied).",
                f"Give the full path of a dataset file inside an allowed root ({roots_text(roots)}), or {UPLOAD_IT}.",
            )
        )
        return result
    if not encodes(real):
        result.errors.append(path_not_utf8_problem("Dataset path", text, real))
        return result
    result.path = real
    result.uploaded = is_within(real, uploads)
    # Outside the roots is reported before existence, so the check cannot be used to probe the server's files.
    if not result.uploaded and not any(is_within(real, resolved(root) or os.path.normpath(root)) for root in roots):
        shown = text if text == real else f"{text} (resolves to {real})"
        result.errors.append(
            Problem(
                OUTSIDE_ALLOWED_ROOTS,
                f"Dataset {shown} is outside the allowed dataset roots ({roots_text(roots)}).",
                f"Move the file inside an allowed root or {UPLOAD_IT}; staff can add a root under "
                "Settings → Directory Settings (or MTM_DATASET_ROOTS).",
            )
        )
        return result
    result.errors.extend(_file_problems(real, result))
    return result


def _file_problems(real: str, result: DatasetPathCheck) -> list[Problem]:
    if not os.path.exists(real):
        return [
            Problem(
                DATASET_NOT_FOUND,
                f"Dataset file {real} does not exist.",
                f"Check the path and its spelling: ls -la {os.path.dirname(real)}",
            )
        ]
    if not os.path.isfile(real):
        what = "a directory" if os.path.isdir(real) else "not a regular file"
        return [Problem(NOT_A_FILE, f"Dataset path {real} is {what}.", "Give the path of the dataset file itself.")]
    try:
        # Not a plain open(): a FIFO swapped in after the isfile() above would hold this check (and a Start's
        # locks, which it runs under) until someone writes to it.
        with open_regular_file(real) as fh:
            fh.read(1)
            result.size_bytes = os.fstat(fh.fileno()).st_size
    except NotRegularFile as exc:
        return [
            Problem(
                NOT_A_FILE,
                f"Dataset path {real} cannot be read as a dataset: {exc.strerror}.",
                "Give the path of the dataset file itself (a regular file).",
            )
        ]
    except OSError as exc:
        return [
            Problem(
                DATASET_UNREADABLE,
                f"Cannot read dataset {real}: {exc.strerror or exc}.",
                f"Check the file's permissions (ls -la {real}); the portal runs as uid {os.getuid()}.",
            )
        ]
    if result.size_bytes == 0:
        return [Problem(DATASET_EMPTY, f"Dataset file {real} is empty.", "Give a file with at least one row.")]
    return []


def safe_upload_name(original_name: object) -> str:
    """The name an upload is stored under: its own base name with only [A-Za-z0-9._-]; DatasetError for names
    that carry a path, control characters or an extension other than .jsonl/.json/.csv."""
    name = original_name if isinstance(original_name, str) else ""
    allowed = ", ".join(UPLOAD_EXTENSIONS)
    bad_name = Problem(
        UPLOAD_BAD_NAME,
        f"Upload name {name!r} is not a plain file name.",
        f"Upload a file with a plain name such as train.jsonl (no folders, no leading dot); allowed: {allowed}.",
    )
    if not name.strip() or name in (".", "..") or name.startswith("."):
        raise DatasetError([bad_name])
    if any(ch in name for ch in "/\\") or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise DatasetError([bad_name])
    stem, extension = os.path.splitext(name)
    if extension.lower() not in UPLOAD_EXTENSIONS:
        raise DatasetError(
            [
                Problem(
                    UPLOAD_BAD_EXTENSION,
                    f"Upload {name!r} is not a JSON Lines, JSON or CSV file.",
                    f"Export the data as one of {allowed} and upload that.",
                )
            ]
        )
    stem = _UNSAFE_NAME_CHARS.sub("_", stem).strip("._")[:_MAX_STEM] or "dataset"
    return stem + extension.lower()


def _chunks(fileobj: Any) -> Iterator[bytes]:
    if hasattr(fileobj, "chunks"):  # Django's UploadedFile
        yield from fileobj.chunks(_CHUNK)
        return
    while chunk := fileobj.read(_CHUNK):
        if not isinstance(chunk, bytes):
            raise TypeError("store_upload needs a file opened in binary mode")
        yield chunk


def store_upload(
    fileobj: IO[bytes] | Any,
    original_name: str,
    *,
    upload_root: str | os.PathLike | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """Stream an uploaded file to <upload_root>/<uuid>/<safe name> and return that path. Refuses bad names and
    extensions, empty files and files over `max_bytes` (nothing is left behind then). An upload is the portal's
    alone (only its owner and staff may train on it, through the portal): its folder is PRIVATE_DIR_MODE and the
    file PRIVATE_FILE_MODE from the moment each is made."""
    name = safe_upload_name(original_name)
    root = Path(upload_root if upload_root is not None else uploads_root())
    root.mkdir(parents=True, exist_ok=True)
    folder = root / uuid.uuid4().hex
    os.mkdir(folder, PRIVATE_DIR_MODE)
    os.chmod(folder, PRIVATE_DIR_MODE)  # the umask may have narrowed it further
    dest = folder / name
    too_large = DatasetError(
        [
            Problem(
                DATASET_TOO_LARGE,
                f"Upload {name} is larger than the limit of {human_bytes(max_bytes)}.",
                "Upload a smaller file, or place it inside an allowed dataset root on the server.",
            )
        ]
    )
    written = 0
    try:
        if callable(getattr(fileobj, "temporary_file_path", None)):
            # Django already wrote a large upload to a temporary file: move it (a rename on the same disk)
            # rather than copy it again.
            written = fileobj.size
            if written > max_bytes:
                raise too_large
            if written:
                file_move_safe(fileobj.temporary_file_path(), str(dest))
                os.chmod(dest, PRIVATE_FILE_MODE)
        else:
            with os.fdopen(os.open(dest, _NEW_FILE_FLAGS, PRIVATE_FILE_MODE), "wb") as out:
                os.fchmod(out.fileno(), PRIVATE_FILE_MODE)
                for chunk in _chunks(fileobj):
                    written += len(chunk)
                    if written > max_bytes:
                        raise too_large
                    out.write(chunk)
        if written == 0:
            raise DatasetError([Problem(DATASET_EMPTY, f"Upload {name} is empty.", "Upload a file with rows in it.")])
    except BaseException:
        remove_path(folder, ignore_errors=True)
        raise
    return dest
