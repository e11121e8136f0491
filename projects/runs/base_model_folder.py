"""The base model folder a run trains from and is validated against, held open by the worker for its children.

A model published in the portal (source "portal") is another run's output folder, inside an output directory a
member can write in: between the resolve stage's check and the trainer's read she could rename that folder away
and put a folder of her own at its path. So the worker opens it as the run that wrote it made it (no link on the
path, the device and inode recorded for that run: projects.runs.folder) and hands the trainer and the validation
child a path through the descriptor it holds, which no rename can redirect; records and messages keep naming the
published path. Folders from the cache or an override are outside a member's reach and are read by their path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from models_registry.models import PublishedModel
from mtm.shared.problems import Problem
from projects.models import TrainingRun
from projects.runs.config import run_config
from projects.runs.folder import RunFolderRefused, open_published_folder

PUBLISHED_SOURCE = "portal"
BASE_MODEL_UNPUBLISHED = "base_model_unpublished"


@dataclass
class HeldBaseModel:
    shown: str  # the path the run resolved, as records and messages name it
    fd: int | None = None  # the published folder held open; None: read by `shown`

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
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> HeldBaseModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unpublished(name: str, path: str) -> Problem:
    return Problem(
        BASE_MODEL_UNPUBLISHED,
        f"Model '{name}' is no longer published from {path} (unpublished, or published again from another run, "
        "since this run resolved it): nothing was read from that folder.",
        f"Start the run again to resolve '{name}' as it is now, or choose another base model.",
    )


def open_base_model(run: TrainingRun) -> HeldBaseModel:
    """The run's base model as its children should read it. A published one is opened now, checked against its
    run's recorded folder: RunFolderRefused (run_folder_changed, run_files_missing, base_model_unpublished) when it
    is no longer the folder that was published."""
    path = run.resolved_path or ""
    if run.resolved_source != PUBLISHED_SOURCE:
        return HeldBaseModel(path)
    name = run_config(run).model_name
    published = PublishedModel.objects.filter(model_name=name).select_related("run").first()
    if published is None or os.path.normpath(published.path) != os.path.normpath(path):
        raise RunFolderRefused(_unpublished(name, path))
    return HeldBaseModel(path, open_published_folder(path, published.run, name))
