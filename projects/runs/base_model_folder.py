"""The base model folder a run trains from and is validated against, held open by the worker for its children.

Whoever can write where the folder lives could change it between the resolve stage's check and a child's read, so
the children never read it by its path; records and messages keep naming that path.

A model published in the portal (source "portal") is another run's output folder, inside an output directory a
member can write in: she could rename that folder away and put a folder of her own at its path. So the worker opens
it as the run that wrote it made it (no link on the path, the device and inode recorded for that run:
projects.runs.folder) and hands the trainer and the validation child a path through the descriptor it holds, which no
rename can redirect.

A model from the Hugging Face cache (source "cache") lies where members can write too: she could replace a snapshot
entry with a link to a file only the portal may read. So the worker opens every file of the snapshot as the resolve
check accepted it (projects.runs.base_model_files: each entry a link into the repo's own blobs/ or a regular file,
no other link followed) and hands the children a private folder in the run's work folder that leads to the files it
holds. A staff-set override folder is held the same way (a link in it is followed only to a file inside it): staff
choose where it lives, but a folder others can write in, or one whose code runs (trust_remote_code), is then no way
into the portal's files either.

The playground's inference worker holds a model it loads the same way (hold_model), in a private folder of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from models_registry.models import PublishedModel
from mtm.shared.problems import Problem
from projects.models import TrainingRun
from projects.runs import records
from projects.runs.base_model_files import (
    Folder,
    HeldFiles,
    ModelFilesRefused,
    blob_links,
    changed,
    hold_folder,
    links_inside,
    open_dir_at,
)
from projects.runs.config import run_config
from projects.runs.folder import RunFolderRefused, open_published_folder

PUBLISHED_SOURCE = "portal"
CACHE_SOURCE = "cache"
OVERRIDE_SOURCE = "override"
BASE_MODEL_UNPUBLISHED = "base_model_unpublished"


@dataclass
class HeldBaseModel:
    shown: str  # the path the run resolved, as records and messages name it
    fd: int | None = None  # the folder the children read (published, or the private one); None: read by `shown`
    files: HeldFiles | None = None  # a cache snapshot's or an override's files held open, and the private folder

    def path_for(self, pid: int | None = None) -> str:
        """The path a child reads the base model by: through the held folder, as /proc/<pid>/fd/<n> for a process
        that reaches this worker's descriptors (`pid`: the worker's), else /proc/self/fd/<n> for one the descriptor
        is passed to (subprocess pass_fds); `shown` when nothing is held."""
        if self.fd is None:
            return self.shown
        return f"/proc/{'self' if pid is None else pid}/fd/{self.fd}"

    def passed_fds(self) -> tuple[int, ...]:
        return () if self.fd is None else (self.fd,)

    def close(self) -> None:
        if self.files is not None:
            self.files.close()  # the private folder's descriptor (`fd`) with the files
            self.files = self.fd = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> HeldBaseModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RUN_AGAIN = "start the run again"
RUN_READER = "A run reads its base model"


def _unpublished(name: str, path: str, then: str) -> Problem:
    return Problem(
        BASE_MODEL_UNPUBLISHED,
        f"Model '{name}' is no longer published from {path} (unpublished, or published again from another run, "
        "since it was resolved): nothing was read from that folder.",
        f"{then[0].upper()}{then[1:]} to resolve '{name}' as it is now, or choose another model.",
    )


def open_base_model(run: TrainingRun) -> HeldBaseModel:
    """The run's base model as its children should read it, held in a private folder in the run's work folder
    (hold_model)."""
    return hold_model(
        run.resolved_source or "",
        run.resolved_path or "",
        run_config(run).model_name,
        run.resolved_revision or "",
        str(records.work_folder(run.pk)),
    )


def hold_model(
    source: str, path: str, name: str, revision: str, work_folder: str, then: str = RUN_AGAIN, reader: str = RUN_READER
) -> HeldBaseModel:
    """The model `name` resolved from `source` at `path`, as a reader should read it. A published one is opened now,
    checked against its run's recorded folder: RunFolderRefused (run_folder_changed, run_files_missing,
    base_model_unpublished) when it is no longer the folder that was published. A cache snapshot's or an override's
    files are opened now, each as the resolve check accepted it, behind a private folder made in `work_folder`:
    RunFolderRefused (base_model_changed) names the first that is no longer so (base_model_too_many_files past
    base_model_files.MAX_HELD_FILES). Any other source is read by its path. `then` is what to do after fixing a
    refusal (a phrase: "start the run again"), `reader` who reads the model (a sentence's subject and verb)."""
    if source == PUBLISHED_SOURCE:
        published = PublishedModel.objects.filter(model_name=name).select_related("run").first()
        if published is None or os.path.normpath(published.path) != os.path.normpath(path):
            raise RunFolderRefused(_unpublished(name, path, then))
        return HeldBaseModel(path, open_published_folder(path, published.run, name))
    if not path or source not in (CACHE_SOURCE, OVERRIDE_SOURCE):
        return HeldBaseModel(path)
    try:
        if source == CACHE_SOURCE:
            files = _hold_snapshot(path, name, revision, work_folder, then, reader)
        else:
            files = _hold_override(path, name, work_folder, then, reader)
    except ModelFilesRefused as refused:
        raise RunFolderRefused(refused.problem) from None
    return HeldBaseModel(path, files.folder_fd, files)


def _hold_snapshot(snapshot: str, name: str, revision: str, work_folder: str, then: str, reader: str) -> HeldFiles:
    """The files of the cache snapshot `snapshot` (<cache>/<repo>/snapshots/<commit>): the cache folder is opened by
    its path (staff chose it), the repo, snapshots/, the snapshot and blobs/ folders without following a link."""
    revision = revision or os.path.basename(snapshot)
    hint = (
        f"Download the model again so that its snapshot holds the files huggingface_hub wrote (hf download {name} "
        f"--revision {revision}), or ask whoever changed it in the cache to put it back; then {then}."
    )
    snapshots, commit = os.path.split(snapshot)
    repo, above = os.path.split(snapshots)
    cache, repo_name = os.path.split(repo)
    folder = Folder(snapshot, name, hint, reader)
    if above != "snapshots" or not os.path.isabs(snapshot):
        raise changed(folder, "", "is not a snapshot folder of the Hugging Face cache")
    cache_fd = _open_folder(cache, Folder(cache, name, hint, reader))
    try:
        repo_fd = open_dir_at(cache_fd, repo_name, Folder(repo, name, hint, reader), "")
    finally:
        os.close(cache_fd)
    try:
        snapshots_fd = open_dir_at(repo_fd, "snapshots", Folder(snapshots, name, hint, reader), "")
        try:
            top_fd = open_dir_at(snapshots_fd, commit, folder, "")
        finally:
            os.close(snapshots_fd)
        try:
            blobs_fd = open_dir_at(repo_fd, "blobs", Folder(repo, name, hint, reader), "blobs")
            try:
                return hold_folder(top_fd, folder, blob_links(blobs_fd, folder), work_folder)
            finally:
                os.close(blobs_fd)
        finally:
            os.close(top_fd)
    finally:
        os.close(repo_fd)


def _hold_override(path: str, name: str, work_folder: str, then: str, reader: str) -> HeldFiles:
    """The files of the override folder `path`, opened by its path (staff chose it); nothing in it through a link
    that leaves it."""
    hint = (
        "Staff: put the override folder's files back (regular files, or links to files inside the folder), or point "
        f"the override for '{name}' at a folder that holds the model; then {then}."
    )
    folder = Folder(path, name, hint, reader)
    top_fd = _open_folder(path, folder)
    try:
        return hold_folder(top_fd, folder, links_inside(top_fd, folder), work_folder)
    finally:
        os.close(top_fd)


def _open_folder(path: str, folder: Folder) -> int:
    """The folder at `path`, through the links on its path (a place staff chose)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise changed(folder, "", f"cannot be opened ({exc.strerror})") from None
