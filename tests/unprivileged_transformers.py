"""transformers' checks for tests/unprivileged.py, which imports the target's module as root and only then calls it
as nobody: nobody may not read every file of the interpreter, and transformers imports most of its code lazily, at
the first load. Importing this module loads a tiny Llama once with each check, as root, so the unprivileged call
finds everything imported already."""

from __future__ import annotations

import tempfile
from pathlib import Path

from models_registry.deep_verdict_child import examine
from models_registry.demo import build_tiny_llama
from tests.transformers_judge import judge

with tempfile.TemporaryDirectory() as _warm:
    _folder = str(build_tiny_llama(Path(_warm) / "model"))
    examine(_folder)
    judge(_folder)

__all__ = ["examine", "judge"]
