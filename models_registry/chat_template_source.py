"""Where a model folder's chat template is, read cheaply: tokenizer_config.json's `chat_template`, or a
chat_template.jinja / chat_template.json file beside it (newer tokenizers save the template on its own)."""

from __future__ import annotations

import json
import os

from models_registry.regular_files import read_regular

MAX_TOKENIZER_CONFIG_BYTES = 16 * 1024 * 1024
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def chat_template_source(folder: str) -> str | None:
    """The file that holds the folder's chat template, or None when it has none (or none can be read)."""
    for name in TEMPLATE_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return name
    try:
        raw = read_regular(os.path.join(folder, "tokenizer_config.json"), MAX_TOKENIZER_CONFIG_BYTES)
        config = json.loads(raw) if len(raw) <= MAX_TOKENIZER_CONFIG_BYTES else None
    except (OSError, ValueError):
        return None
    if isinstance(config, dict) and config.get("chat_template"):
        return "tokenizer_config.json"
    return None
