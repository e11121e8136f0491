"""Whether a model's chat template renders a dataset's conversations, judged on the first rows: what a save
answers at once while the worker counts the tokens of the whole part read (token_stats.py).

The template runs in a limited child process (template_sandbox), over at most TEMPLATE_CHECK_ROWS rows with every
string cut to TEMPLATE_CHECK_CHARS characters: the template's problems (none, an error for a row's roles, a
template that loops or grows without bound) show on any rows, and the text tokenized here stays a few kilobytes.
"""

from __future__ import annotations

from typing import Any

from models_registry.template_sandbox import TemplateLimits
from mtm.shared.problems import Problem
from projects.datasets.errors import DatasetError
from projects.datasets.examples import encode_rows
from projects.datasets.pairs import PREFERENCE, encode_pairs, is_conversational

TEMPLATE_CHECK_ROWS = 16
TEMPLATE_CHECK_CHARS = 2000


def renders_chat_template(fmt: str | None, rows: list[dict]) -> bool:
    """Whether rows of this format go through the model's chat template: conversations, and pairs of messages."""
    return fmt == "messages" or (fmt == PREFERENCE and bool(rows) and is_conversational(rows[0]))


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        return value[:TEMPLATE_CHECK_CHARS]
    if isinstance(value, list):
        return [_cut(item) for item in value]
    if isinstance(value, dict):
        return {key: _cut(item) for key, item in value.items()}
    return value


def chat_template_problems(fmt: str | None, rows: list[dict], tokenizer: Any, *, model: str) -> list[Problem]:
    """The problems of rendering the first rows through `tokenizer`'s chat template (no template, a row it cannot
    render, past its CPU or memory limits); [] when they render or the rows need no template."""
    if tokenizer is None or not renders_chat_template(fmt, rows):
        return []
    head = [_cut(row) for row in rows[:TEMPLATE_CHECK_ROWS]]
    limits = TemplateLimits.from_settings()
    try:
        if fmt == PREFERENCE:
            encode_pairs(head, tokenizer, limits=limits, model=model)
        else:
            encode_rows(head, fmt, tokenizer, template_limits=limits, model=model)
    except DatasetError as exc:
        return list(exc.problems)
    return []
