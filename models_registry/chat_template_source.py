"""Where a model folder's chat template is, read cheaply: tokenizer_config.json's `chat_template`, or a
chat_template.jinja / chat_template.json file beside it (newer tokenizers save the template on its own)."""

from __future__ import annotations

import os

from models_registry.bounded_json import read_json

TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def chat_template_source(folder: str) -> str | None:
    """The file that holds the folder's chat template, or None when it has none (or none can be read)."""
    for name in TEMPLATE_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return name
    try:  # bounded and kept by the file's identity: the model check has usually read it already
        config = read_json(os.path.join(folder, "tokenizer_config.json")).value
    except OSError:
        return None
    if isinstance(config, dict) and config.get("chat_template"):
        return "tokenizer_config.json"
    return None
