"""The registry folder a playground model is loaded from, held as it was resolved while the worker loads it.

Members can write in the shared Hugging Face cache (and a published model's folder lies in an output directory they
can write in): between the resolve check and the load, one of them could replace a snapshot entry (its chat template,
its tokenizer_config.json) with a link to a file only the portal may read, and have it rendered into her prompt. So
the worker holds the folder as runs hold their base model (projects.runs.base_model_folder.hold_model): a cache
snapshot's or an override's files each opened as the check accepts them, behind a private folder (0700) in the
worker's var/playground/; a published model's folder opened as its run made it. The model is loaded through that,
and the hold is released once loading is done: transformers has then read every file it needs (a safetensors file it
maps stays mapped from the file opened here, whatever becomes of the cache entry)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from playground.targets import LoadSpec
from projects.runs.base_model_folder import hold_model

RETRY = "send the message again"
READER = "The playground reads a model"


def private_parent() -> Path:
    """The folder in which the worker makes the private folders it loads models through."""
    return Path(settings.VAR_DIR) / "playground"


@contextlib.contextmanager
def held(spec: LoadSpec) -> Iterator[LoadSpec]:
    """`spec` with its registry folder reached through the files held as resolved, until the block ends.
    RunFolderRefused (base_model_changed, run_folder_changed, base_model_unpublished, ...) when it is no longer so."""
    path = spec.base_model_path or spec.model_dir
    if not spec.registry_source or not path:
        yield spec
        return
    model = hold_model(
        spec.registry_source, path, spec.registry_name, spec.registry_revision, str(private_parent()), RETRY, READER
    )
    with model:
        reached = model.path_for()
        if spec.base_model_path:
            yield dataclasses.replace(spec, base_model_path=reached)
        else:
            yield dataclasses.replace(spec, model_dir=reached, tokenizer_dir=reached)
