"""What a folder without config.json is instead of a model: a LoRA adapter, or a GGUF export.

Both are common in caches and both fail in transformers with a bare "no config.json"; the portal names them, and
for an adapter, the base model it was trained on and whether that base is in the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from models_registry.names import name_error, repo_folder_name
from mtm.shared.problems import Problem

ADAPTER_CONFIG = "adapter_config.json"


def gguf_files(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.lower().endswith(".gguf"))


def _base_model(read_adapter_config: Callable[[], object]) -> str | None:
    try:
        data = read_adapter_config()
    except (OSError, ValueError):
        return None
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    return base if isinstance(base, str) and base.strip() else None


def _base_whereabouts(base: str, cache_dir: Path | None) -> str:
    if Path(base).is_absolute():
        return f"a folder, {base}, which {'exists' if Path(base).is_dir() else 'does not exist'} on this server"
    if name_error(base) is not None or cache_dir is None:
        return repr(base)
    cached = (cache_dir / repo_folder_name(base) / "snapshots").is_dir()
    return f"'{base}', which is {'in the cache' if cached else f'not in the cache ({cache_dir})'}"


def without_config(
    names: Iterable[str],
    read_adapter_config: Callable[[], object],
    model_name: str | None,
    cache_dir: Path | None,
) -> Problem | None:
    """Why a folder has no config.json when the reason is visible from its files, or None."""
    names = set(names)
    shown = model_name or "this folder"
    if ADAPTER_CONFIG in names:
        base = _base_model(read_adapter_config)
        where = _base_whereabouts(base, cache_dir) if base else "not named in adapter_config.json"
        return Problem(
            "adapter_not_model",
            f"'{shown}' is a LoRA adapter (adapter_config.json, no config.json), not a full model; its base model is "
            f"{where}.",
            "Choose the base model as the project's model and train a new adapter on it; to use this adapter's "
            "weights, merge it into its base first and point a Model Override at the merged folder.",
        )
    if ggufs := gguf_files(names):
        return Problem(
            "gguf_only",
            f"'{shown}' holds only GGUF weights ({', '.join(ggufs[:3])}), a format for inference engines such as "
            "llama.cpp; it has no config.json and no safetensors or .bin weights, so it cannot be fine-tuned here.",
            "Use the original (non-GGUF) repo of this model, which has config.json and safetensors weights.",
        )
    return None
