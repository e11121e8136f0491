"""Builders for Hugging Face cache layouts as huggingface_hub writes them: blobs named by content hash,
refs/<name> holding a commit without a trailing newline, snapshots/<commit>/<file> relative symlinks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from models_registry.names import repo_folder_name

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
# A config and tensors that agree (names and shapes as a Llama checkpoint has them), small enough to write anywhere.
SMALL_CONFIG = {"model_type": "llama", "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1}
SMALL_TENSORS = {
    "model.embed_tokens.weight": (8, 4),
    "model.layers.0.self_attn.q_proj.weight": (4, 4),
    "lm_head.weight": (8, 4),
}


def write_blob(repo: Path, data: bytes) -> Path:
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob = blobs / hashlib.sha256(data).hexdigest()
    if not blob.exists():
        blob.write_bytes(data)
    return blob


def add_file(cache: Path, name: str, rel: str, data: bytes | str | dict, commit: str = COMMIT_A) -> Path:
    """Put one file into a snapshot through a blob and a relative symlink."""
    if isinstance(data, dict):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    repo = cache / repo_folder_name(name)
    blob = write_blob(repo, data)
    link = repo / "snapshots" / commit / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def set_ref(cache: Path, name: str, commit: str, ref: str = "main") -> None:
    path = cache / repo_folder_name(name) / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commit)  # huggingface_hub writes no trailing newline


def make_safetensors(tensors: dict[str, tuple[int, ...]] | None = None) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    tensors = tensors or {"w": (4, 4)}
    return save({k: np.zeros(shape, dtype=np.float32) for k, shape in tensors.items()})


def make_model_repo(
    cache: Path,
    name: str,
    commit: str = COMMIT_A,
    *,
    config: dict | None = None,
    tokenizer: bool = True,
    weights: bool = True,
    generation_config: bool = True,
    ref: bool = True,
) -> Path:
    """A small well-formed (unless told otherwise) model repo in the cache. Returns the snapshot folder."""
    add_file(cache, name, "config.json", config if config is not None else SMALL_CONFIG, commit)
    if tokenizer:
        add_file(cache, name, "tokenizer_config.json", {"model_max_length": 512}, commit)
        add_file(cache, name, "tokenizer.json", {"version": "1.0", "model": {"type": "BPE"}}, commit)
    if weights:
        add_file(cache, name, "model.safetensors", make_safetensors(SMALL_TENSORS), commit)
    if generation_config:
        add_file(cache, name, "generation_config.json", {"max_new_tokens": 8}, commit)
    if ref:
        set_ref(cache, name, commit)
    return cache / repo_folder_name(name) / "snapshots" / commit
