"""Whether a project's max sequence length is above its base model's context length (config.json's
max_position_embeddings). The trainer cuts it to the context length; the form says so before a run does."""

from __future__ import annotations

import os

from models_registry.bounded_json import parse_bytes
from models_registry.lookup import resolve_model
from models_registry.names import name_error
from models_registry.regular_files import read_regular

MAX_CONFIG_BYTES = 4 * 1024 * 1024


def context_length(folder: str) -> int | None:
    """The model's max_position_embeddings, or None when its config does not say (or cannot be read)."""
    try:
        raw = read_regular(os.path.join(folder, "config.json"), MAX_CONFIG_BYTES)
    except OSError:
        return None
    config = parse_bytes(raw, MAX_CONFIG_BYTES).value  # bounded in size and values; None when it is not read
    length = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        return None
    return length


def seq_length_warning(model_name: str, revision: str, max_seq_length: object) -> str:
    """What the form says under max_seq_length when it is above the model's context length; "" otherwise."""
    try:
        wanted = int(str(max_seq_length).strip())
    except ValueError:
        return ""
    model_name = model_name.strip()
    if not model_name or name_error(model_name):
        return ""
    resolution = resolve_model(model_name, revision.strip() or None)
    if not resolution.valid or resolution.path is None:
        return ""
    context = context_length(resolution.path)
    if context is None or wanted <= context:
        return ""
    return (
        f"Max sequence length {wanted} is above the context length of '{model_name}' ({context} tokens): "
        f"training cuts sequences at {context}. Set it to {context} or less to train on what you see here."
    )
