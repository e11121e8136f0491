"""The prompt a fine-tuned model is asked in validation when its project sets none, for a row that needs the run's
tokenizer (a messages row or a preference pair is put through its chat template).

The tokenizer is the run's own, in the run folder the validate stage holds open and checked. It is read from that
descriptor file by file, never through a link and only files the worker wrote (its user's, one link each), into a
private folder; transformers loads it from there in a limited child, since loading a tokenizer may take any time and
memory. A file swapped in after the folder was checked is refused, never read.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from typing import Any

from models_registry.deep_verdict import verdict_limits
from mtm.shared.limited_child import run_limited
from mtm.shared.nofollow import read_owned_at
from projects.datasets import prompt_text
from projects.datasets.pairs import PREFERENCE, prompt_of

# Weights and code are never a tokenizer's: they are left where they are.
NOT_TOKENIZER_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".py")
MAX_TOKENIZER_FILE = 256 * 1024 * 1024
MAX_TOKENIZER_FILES = 64


def copy_tokenizer_files(folder_fd: int, dest: str) -> list[str]:
    """Copy the top-level files of the folder `folder_fd` that may be a tokenizer's (weights and code left out) into
    the folder `dest`, each read by read_owned_at; OSError for any file the worker did not write there."""
    copied = []
    for name in sorted(os.listdir(folder_fd)):
        if name.startswith(".") or name.endswith(NOT_TOKENIZER_SUFFIXES):
            continue
        if stat.S_ISDIR(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
            continue
        if len(copied) == MAX_TOKENIZER_FILES:
            raise OSError(f"more than {MAX_TOKENIZER_FILES} files at the top of the run folder")
        data = read_owned_at(folder_fd, name, MAX_TOKENIZER_FILE)
        fd = os.open(os.path.join(dest, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        copied.append(name)
    return copied


def _prompt_with(folder: str, row: dict, fmt: str) -> str:
    from transformers import AutoTokenizer  # heavy: loaded in the limited child only

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    if fmt == PREFERENCE:
        return prompt_of(row, tokenizer) or ""
    return prompt_text(row, fmt, tokenizer) or ""


def tokenizer_prompt(folder_fd: int, row: dict, fmt: str) -> str:
    """The prompt for `row` (of format `fmt`) through the run's tokenizer in the folder `folder_fd`. Raises OSError for
    a file there the worker did not write, LimitExceeded or RuntimeError when loading or applying it fails."""
    with tempfile.TemporaryDirectory(prefix="mtm-tokenizer-") as private:
        copy_tokenizer_files(folder_fd, private)
        answer: Any = run_limited(functools.partial(_prompt_with, private, row, fmt), verdict_limits())
    return str(answer or "")
