"""The files of a base model folder from the Hugging Face cache or an override, each opened once by the worker as
the resolve check accepted it, and a private folder whose entries lead to those open files.

Members can write in the shared cache (and perhaps in an override's folder). Between the resolve stage's check and a
child's read, one of them could replace a snapshot entry with a link to a file only the portal may read (another
member's upload, the secret key) and have the trainer save its content into her run folder. So the worker opens the
whole folder here, following no link but the one kind the check accepts: every folder and file is opened relative to
its folder's descriptor with O_NOFOLLOW; a link is followed only where `LinkRule` allows it (in a cache snapshot, the
link huggingface_hub writes, ../../blobs/<name> into the repo's own blobs/), to a file opened the same way. Each file
must be a regular file. The children then read the model through a folder the worker makes (0700) inside the run's
work folder, whose entries are links to /proc/<worker pid>/fd/<n>: whatever is done to the folder afterwards, they
read the files opened here, and nothing is read from a file that is no longer what was checked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import resource
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from django.conf import settings

from models_registry.name_bytes import encodes
from models_registry.regular_files import kind_of
from mtm.shared.nofollow import DIR_FLAGS, FILE_FLAGS, LINK_ERRORS
from mtm.shared.owned_files import open_subdir, remove_tree
from mtm.shared.problems import Problem
from mtm.shared.text import storable

# A model holds a few dozen files (a few hundred for the largest, sharded); each is one descriptor while it trains.
MAX_HELD_FILES = 1000
PRIVATE_PREFIX = ".base-model-"
BASE_MODEL_CHANGED = "base_model_changed"
BASE_MODEL_TOO_MANY_FILES = "base_model_too_many_files"
_SPARE_DESCRIPTORS = 256  # what the worker needs besides the held files (database, broker, logs, children's pipes)


class ModelFilesRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


@dataclass
class Folder:
    """The model folder as it was resolved: `shown` is its path as records and messages name it, `model_name`
    the model's name, `hint` what to do when a file is not what was checked, `reader` who reads it (a run, as its
    base model, or the playground)."""

    shown: str
    model_name: str
    hint: str
    reader: str = "A run reads its base model"


# (the entry's path inside the folder, as parts; the link's target) -> the regular file the link may lead to, opened;
# ModelFilesRefused when the link may not be followed.
LinkRule = Callable[[tuple[str, ...], str], int]


@dataclass
class HeldFiles:
    """The files opened (`files`) and the private folder leading to them (`folder_fd`, named `name` in `parent_fd`,
    the run's work folder). `close` closes them all and removes the private folder."""

    parent_fd: int
    name: str
    folder_fd: int
    files: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.files:
            os.close(fd)
        self.files = []
        if self.folder_fd >= 0:
            os.close(self.folder_fd)
            self.folder_fd = -1
        if self.parent_fd >= 0:
            try:
                remove_tree(self.parent_fd, self.name)
            finally:
                os.close(self.parent_fd)
                self.parent_fd = -1


def changed(folder: Folder, rel: str, how: str) -> ModelFilesRefused:
    """The refusal of the entry `rel` of `folder` ("" for the folder itself), which is not what the check accepts."""
    where = f"{folder.shown}/{storable(rel)}" if rel else folder.shown
    return ModelFilesRefused(
        Problem(
            BASE_MODEL_CHANGED,
            f"The model '{folder.model_name}' was not loaded: {where} {how}. {folder.reader} only as the resolve "
            "check accepts it (it may have been changed since), and nothing was read from this.",
            folder.hint,
        )
    )


def _too_many(folder: Folder) -> ModelFilesRefused:
    return ModelFilesRefused(
        Problem(
            BASE_MODEL_TOO_MANY_FILES,
            f"The base model '{folder.model_name}' in {folder.shown} holds more than {MAX_HELD_FILES} files and "
            f"folders. The worker keeps each file of a base model open while the run's children read it, and holds at "
            f"most {MAX_HELD_FILES}: nothing was loaded.",
            f"Remove from {folder.shown} what the model does not need to load (other formats' files and folders, "
            "such as onnx/ or .gguf files), then start the run again.",
        )
    )


class _NotAsChecked(Exception):
    """An entry that is not what the check accepted; `how` says what it is (a phrase after its path)."""

    def __init__(self, how: str, gone: bool = False):
        super().__init__(how)
        self.how, self.gone = how, gone


def _opened(name: str, dir_fd: int, flags: int, what: str) -> int:
    """`name` in `dir_fd` opened with `flags` (O_NOFOLLOW among them); _NotAsChecked when it is gone or is `what` (a
    link). Running out of descriptors is no change of the model: that OSError is raised as it is."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise _NotAsChecked("is gone (deleted or moved)", gone=True) from None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise
        if exc.errno in LINK_ERRORS:
            raise _NotAsChecked(f"is {what}; it was not followed") from None
        raise _NotAsChecked(f"cannot be opened ({exc.strerror})") from None


def _regular(dir_fd: int, name: str) -> int:
    fd = _opened(name, dir_fd, FILE_FLAGS, "a link")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _NotAsChecked(f"is {kind_of(mode)}, not a regular file")
    return fd


def open_regular_at(dir_fd: int, name: str, folder: Folder, rel: str) -> int:
    """The regular file `name` of `dir_fd` (the entry `rel` of `folder`), opened without following a link and
    without waiting on a FIFO; ModelFilesRefused when it is a link, gone or not a regular file."""
    try:
        return _regular(dir_fd, name)
    except _NotAsChecked as exc:
        raise changed(folder, rel, exc.how) from None


def open_dir_at(dir_fd: int, name: str, folder: Folder, rel: str) -> int:
    """The folder `name` of `dir_fd` (the entry `rel` of `folder`), never through a link."""
    try:
        return _opened(name, dir_fd, DIR_FLAGS, "a link (or a file) where a folder was")
    except _NotAsChecked as exc:
        raise changed(folder, rel, exc.how) from None


def hold_folder(top_fd: int, folder: Folder, links: LinkRule, work_folder: str) -> HeldFiles:
    """Every entry under the folder `top_fd` (`folder`) opened as the resolve check accepted it, and the private
    folder (made in `work_folder`) that leads to them. ModelFilesRefused names the first entry that is not what was
    checked, or says that the folder holds more than MAX_HELD_FILES entries; nothing is held then."""
    os.makedirs(work_folder, mode=0o700, exist_ok=True)
    parent_fd = os.open(work_folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    name = f"{PRIVATE_PREFIX}{secrets.token_hex(8)}"
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        held = HeldFiles(parent_fd, name, open_subdir(parent_fd, name))
    except BaseException:
        os.close(parent_fd)
        raise
    try:
        _mirror(top_fd, held, folder, links)
    except BaseException as exc:
        held.close()
        if isinstance(exc, OSError):
            raise _unreadable(folder, exc) from None
        raise
    return held


def _listing(dir_fd: int, room: int, folder: Folder) -> list[str]:
    """The names in `dir_fd`, sorted; ModelFilesRefused once there are more than `room`."""
    with os.scandir(dir_fd) as entries:
        names = [entry.name for entry in islice(entries, room + 1)]
    if len(names) > room:
        raise _too_many(folder)
    return sorted(names)


def _mirror(top_fd: int, held: HeldFiles, folder: Folder, links: LinkRule) -> None:
    pid = os.getpid()
    max_depth = settings.MTM_MODEL_FOLDER_MAX_DEPTH
    room = MAX_HELD_FILES
    _make_room_for(room)
    # (a folder of the model, the private folder that mirrors it, its path inside the model folder as parts)
    pending: list[tuple[int, int, tuple[str, ...]]] = [(os.dup(top_fd), os.dup(held.folder_fd), ())]
    try:
        while pending:
            source, mirror, parts = pending.pop()
            try:
                names = _listing(source, room, folder)
                room -= len(names)
                for name in names:
                    entry = (*parts, name)
                    rel = "/".join(entry)
                    if not encodes(rel):
                        raise changed(folder, rel, "is named with bytes that are not UTF-8")
                    kind = _entry_kind(source, name, folder, rel)
                    if stat.S_ISDIR(kind):
                        if len(entry) > max_depth:
                            raise changed(folder, rel, f"is nested more than {max_depth} folders deep")
                        below = open_dir_at(source, name, folder, rel)
                        try:
                            os.mkdir(name, 0o700, dir_fd=mirror)
                            pending.append((below, open_subdir(mirror, name), entry))
                        except BaseException:
                            os.close(below)
                            raise
                        continue
                    if stat.S_ISLNK(kind):
                        fd = links(entry, os.readlink(name, dir_fd=source))
                    else:
                        fd = open_regular_at(source, name, folder, rel)
                    held.files.append(fd)
                    os.symlink(f"/proc/{pid}/fd/{fd}", name, dir_fd=mirror)
            finally:
                os.close(source)
                os.close(mirror)
    finally:
        for source, mirror, _ in pending:
            os.close(source)
            os.close(mirror)


def _entry_kind(dir_fd: int, name: str, folder: Folder, rel: str) -> int:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        raise changed(folder, rel, "is gone (deleted or moved)") from None


def _make_room_for(files: int) -> None:
    """Raise this process's limit of open files (up to its hard limit) so that `files` more can be held."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = files + _SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):  # an open past the limit then fails with EMFILE, said so
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def blob_links(repo_blobs_fd: int, folder: Folder) -> LinkRule:
    """A cache snapshot's rule: an entry may be a link only as huggingface_hub writes it, `../`, once per folder
    between the entry and the repo folder, then `blobs/<name>`: into the repo's own blobs/ (opened already, as
    `repo_blobs_fd`), where <name> must be a regular file."""

    def open_blob(entry: tuple[str, ...], target: str) -> int:
        rel = "/".join(entry)
        prefix = "../" * (len(entry) + 1) + "blobs/"
        blob = target[len(prefix) :] if target.startswith(prefix) else ""
        if not blob or "/" in blob or blob in (".", ".."):
            raise changed(
                folder,
                rel,
                f"is a link to {storable(target)}, not a link into the repo's own blobs/ folder as "
                "huggingface_hub makes it; the link was not followed",
            )
        try:
            return _regular(repo_blobs_fd, blob)
        except _NotAsChecked as exc:
            if exc.gone:
                raise changed(folder, rel, f"links to blobs/{storable(blob)}, which is gone") from None
            repo = Folder(
                posixpath.dirname(posixpath.dirname(folder.shown)), folder.model_name, folder.hint, folder.reader
            )
            raise changed(repo, f"blobs/{blob}", exc.how) from None

    return open_blob


def links_inside(top_fd: int, folder: Folder) -> LinkRule:
    """An override folder's rule: a link is followed when its target, read as a relative path, names a regular file
    inside the folder, reached from `top_fd` without any further link."""

    def open_inside(entry: tuple[str, ...], target: str) -> int:
        rel = "/".join(entry)
        inside = posixpath.normpath(posixpath.join(*entry[:-1], target)) if not target.startswith("/") else ""
        if not inside or inside == "." or inside == ".." or inside.startswith("../"):
            raise changed(
                folder, rel, f"is a link to {storable(target)}, which leaves the folder; the link was not followed"
            )
        *folders, name = inside.split("/")
        dir_fd = os.dup(top_fd)
        try:
            for i, part in enumerate(folders):
                below = open_dir_at(dir_fd, part, folder, "/".join(folders[: i + 1]))
                os.close(dir_fd)
                dir_fd = below
            return open_regular_at(dir_fd, name, folder, inside)
        finally:
            os.close(dir_fd)

    return open_inside


def _unreadable(folder: Folder, exc: OSError) -> ModelFilesRefused:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return ModelFilesRefused(
            Problem(
                BASE_MODEL_TOO_MANY_FILES,
                f"The worker could not hold the files of the base model '{folder.model_name}' in {folder.shown} open: "
                "it reached its limit of open files.",
                "Staff: raise the worker's open files limit (ulimit -n, or LimitNOFILE= in its service), then start "
                "the run again.",
            )
        )
    return ModelFilesRefused(
        Problem(
            "base_model_unreadable",
            f"The worker could not read the base model '{folder.model_name}' in {folder.shown}: {exc.strerror or exc}.",
            folder.hint,
        )
    )
