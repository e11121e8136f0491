"""Built-in chat templates, for a `messages` dataset on a base model whose tokenizer has none of its own.

The choice is the `chat_template` hyperparameter: "model" keeps the tokenizer's own template, a built-in name
replaces it. The trainer sets it before building the examples, so the saved model carries it too.
"""

from __future__ import annotations

import copy
from typing import Any

MODEL_OWN = "model"

# ChatML (<|im_start|>role\n…<|im_end|>); {% generation %} marks the assistant text the loss is computed on.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
BUILT_IN: dict[str, str] = {"chatml": CHATML}


def with_chat_template(tokenizer: Any, choice: str) -> Any:
    """`tokenizer` itself for the model's own template; otherwise a copy carrying the built-in one (the tokenizer
    may be a shared, cached one that others read)."""
    if tokenizer is None or choice not in BUILT_IN:
        return tokenizer
    chosen = copy.copy(tokenizer)
    chosen.chat_template = BUILT_IN[choice]
    return chosen
