from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF hub cache that the portal uses (through HF_HUB_CACHE; the settings row is blank)."""
    cache = tmp_path / "hf-cache" / "hub"
    cache.mkdir(parents=True)
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A real tiny Llama (trained BPE tokenizer, random weights, chat template) saved with save_pretrained."""
    from models_registry.demo import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture
def tiny_llama_in_cache(hf_cache, tiny_llama_dir) -> tuple[str, Path]:
    """The tiny Llama laid into the cache as huggingface_hub lays a download. Returns (name, snapshot)."""
    from models_registry.demo import install_into_cache

    name = "test-org/tiny-llama"
    return name, install_into_cache(tiny_llama_dir, hf_cache, name)


@pytest.fixture
def copy_of_tiny_llama(tmp_path, tiny_llama_dir) -> Path:
    dest = tmp_path / "tiny-llama-copy"
    shutil.copytree(tiny_llama_dir, dest)
    return dest
