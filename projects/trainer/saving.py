"""How the trainer child writes in its output folder: never by a path a link could redirect.

The child opens its output folder once (the folder the supervisor started it in, or spec.output_dir). The Trainer
and save_pretrained write by path, so their output_dir is the private staging folder named in the spec (0700, made
by the worker inside the run folder): each checkpoint-N saved there, and the final model, is checked (folders and
singly linked regular files only), given the portal's modes (mtm.shared.owned_files) and renamed into the output
folder without replacing anything. Old checkpoints are rotated out of the output folder here, by descriptor.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mtm.shared.nofollow import open_dir_nofollow
from mtm.shared.owned_files import (
    UnsafeEntry,
    move_all_into_place,
    move_into_place,
    open_private,
    open_subdir,
    remove_tree,
    write_new,
)
from projects.trainer.errors import TrainerError
from projects.trainer.spec import TrainerSpec

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
FINAL_STAGE = "final"


def open_write_dir(spec: TrainerSpec) -> int:
    """A descriptor of the folder the child writes in: "." is the folder it was started in (already opened without
    following links by the supervisor); an absolute output_dir is walked without following links."""
    if spec.write_dir == Path("."):
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return open_dir_nofollow(str(spec.write_dir), create=True)


def staging_path(spec: TrainerSpec) -> Path:
    """The path the libraries are given to write in (relative to the child's working folder when write_dir is ".")."""
    return spec.write_dir / spec.staging_dir


def prepare_staging(spec: TrainerSpec) -> None:
    """Make sure the staging folder is the private one (created when missing): refuses one someone else made."""
    folder = open_write_dir(spec)
    try:
        os.close(open_private(folder, spec.staging_dir))
    except UnsafeEntry as bad:
        raise _refused(spec, bad) from None
    finally:
        os.close(folder)


def _refused(spec: TrainerSpec, bad: UnsafeEntry) -> TrainerError:
    return TrainerError(
        "output_entry_refused",
        f"Refused to write {spec.output_dir / bad.name}: {bad.why}.",
        "The run folder is the worker's own; nothing else may be put in it. Start a new run.",
    )


class StagedCheckpoints:
    """Trainer mixin: each checkpoint is saved in the staging folder (the Trainer's output_dir), then moved into the
    output folder as checkpoint-N; the best checkpoint is then known by its place there."""

    mtm_spec: TrainerSpec | None = None

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)  # type: ignore[misc]
        spec = self.mtm_spec
        if spec is None:
            return
        _barrier()  # every rank's files (its RNG state) are in the staging folder before it moves
        if self.args.should_save:  # type: ignore[attr-defined]
            state = self.state  # type: ignore[attr-defined]
            publish_checkpoint(spec, f"checkpoint-{state.global_step}", self.args.save_total_limit, state)  # type: ignore[attr-defined]
        _barrier()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def publish_checkpoint(spec: TrainerSpec, name: str, keep: int | None, state: Any = None) -> None:
    """Move staging/`name` into the output folder, point the Trainer's best checkpoint at its new place, and remove
    the oldest checkpoints beyond `keep` (never the newest, nor the best)."""
    folder = open_write_dir(spec)
    try:
        stage = open_subdir(folder, spec.staging_dir)
        try:
            move_into_place(stage, name, folder)
        except UnsafeEntry as bad:
            raise _refused(spec, bad) from None
        finally:
            os.close(stage)
        best = getattr(state, "best_model_checkpoint", None)
        if best and Path(best).parent.name == spec.staging_dir:
            state.best_model_checkpoint = str(spec.write_dir / Path(best).name)
        rotate_checkpoints(folder, keep, Path(best).name if best else None)
    finally:
        os.close(folder)


def rotate_checkpoints(folder: int, keep: int | None, best: str | None) -> list[str]:
    """Remove the oldest checkpoint-N folders of `folder` beyond `keep`; the newest and `best` stay. The names
    removed."""
    if not keep or keep <= 0:
        return []
    found = sorted((int(match.group(1)), name) for name in os.listdir(folder) if (match := _CHECKPOINT.match(name)))
    names = [name for _, name in found]
    protected = {names[-1], *([best] if best in names else [])} if names else set()
    removed: list[str] = []
    for name in names:
        if len(names) - len(removed) <= max(keep, len(protected)):
            break
        if name not in protected:
            remove_tree(folder, name)
            removed.append(name)
    return removed


def save_final_staged(spec: TrainerSpec, save: Any) -> dict[str, str | None]:
    """Run `save(path)` (projects.trainer.outputs.save_final on a path) into a fresh folder inside the staging
    folder, then move what it wrote into the output folder; returns what `save` returned (the manifest's layout)."""
    folder = open_write_dir(spec)
    try:
        stage = open_subdir(folder, spec.staging_dir)
        try:
            remove_tree(stage, FINAL_STAGE)
            os.mkdir(FINAL_STAGE, 0o700, dir_fd=stage)
            layout = save(staging_path(spec) / FINAL_STAGE)
            final = open_subdir(stage, FINAL_STAGE)
            try:
                move_all_into_place(final, folder)
            except UnsafeEntry as bad:
                raise _refused(spec, bad) from None
            finally:
                os.close(final)
            os.rmdir(FINAL_STAGE, dir_fd=stage)
        finally:
            os.close(stage)
    finally:
        os.close(folder)
    return layout


def write_output_file(spec: TrainerSpec, name: str, data: bytes) -> Path:
    """Create `name` in the output folder (never over an existing one, never through a link); its path as shown."""
    folder = open_write_dir(spec)
    try:
        write_new(folder, name, data)
    except FileExistsError:
        raise _refused(spec, UnsafeEntry(name, "already exists in the run folder")) from None
    finally:
        os.close(folder)
    return spec.output_dir / name


def drop_staging(spec: TrainerSpec) -> None:
    """Remove the staging folder once the final model is in place (the worker removes what a crash leaves)."""
    folder = open_write_dir(spec)
    try:
        remove_tree(folder, spec.staging_dir)
    finally:
        os.close(folder)
