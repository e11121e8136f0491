"""Preference pairs, the rows the DPO objective trains on: what a pair row looks like, what is wrong with one, and
the token lengths of its prompt and its two answers.

Three shapes, in JSON Lines, a JSON array or CSV (text only):
- text: {"prompt": "...", "chosen": "...", "rejected": "..."}
- conversational, shared prompt: {"prompt": [messages], "chosen": [assistant messages], "rejected": [...]}
- conversational, implicit prompt: {"chosen": [messages], "rejected": [messages]}, both starting with the same
  messages (the prompt) and ending with the assistant's answer.
The trainer hands TRL the rows as they are; the prompt of an implicit-prompt row is the messages both sides share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models_registry.template_sandbox import TemplateLimitExceeded, run_limited
from mtm.shared.problems import Problem
from projects.datasets.errors import (
    CHAT_TEMPLATE_ERROR,
    DEFAULT_MAX_ERRORS,
    DatasetError,
    ProblemCollector,
    RowRef,
    has_chat_template,
    json_type_name,
    no_chat_template_problem,
)

PREFERENCE = "preference"
PAIR_KEYS = ("chosen", "rejected")
PAIR_SHAPE = (
    '{"prompt": "...", "chosen": "...", "rejected": "..."} (chosen and rejected may be lists of '
    "{role, content} messages, with the prompt as messages or as the messages both lists start with)"
)
_ROLES = ("system", "user", "assistant", "tool")


def _message_error(messages: Any, key: str) -> str | None:
    if not isinstance(messages, list):
        return f"'{key}' must be a string or an array of {{role, content}} objects, got {json_type_name(messages)}"
    for index, message in enumerate(messages):
        where = f"{key}[{index}]"
        if not isinstance(message, dict):
            return f"{where} must be an object with 'role' and 'content', got {json_type_name(message)}"
        role = message.get("role")
        if role not in _ROLES:
            shown = f"'{role}'" if isinstance(role, str) else json_type_name(role)
            return f"{where}.role must be one of {', '.join(_ROLES)}, got {shown}"
        if not isinstance(message.get("content"), str):
            return f"{where}.content must be a string, got {json_type_name(message.get('content'))}"
    return None


def shared_prefix(chosen: list[dict], rejected: list[dict]) -> int:
    """How many messages both lists start with."""
    count = 0
    for left, right in zip(chosen, rejected, strict=False):
        if left != right:
            break
        count += 1
    return count


def split_pair(row: dict) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) of a checked row: three strings, or three message lists (an implicit prompt is
    taken off the front of both answers)."""
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" in row:
        return row["prompt"], chosen, rejected
    shared = shared_prefix(chosen, rejected)
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _answer_error(answer: Any, key: str) -> str | None:
    if isinstance(answer, str):
        return None if answer.strip() else f"'{key}' is empty: there is no answer to prefer or avoid"
    if not answer:
        return f"'{key}' has no message after the prompt: there is no answer to prefer or avoid"
    if answer[-1]["role"] != "assistant":
        return f"'{key}' must end with an assistant message (the answer), not a '{answer[-1]['role']}' one"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in answer):
        return f"'{key}' is empty: its assistant message has no content"
    return None


def pair_error(row: dict) -> str | None:
    """What is wrong with a pair row (without the "Row N" prefix), or None."""
    for key in PAIR_KEYS:
        if key not in row:
            return f"missing '{key}'"
    chosen, rejected = row["chosen"], row["rejected"]
    for key in PAIR_KEYS:
        if not isinstance(row[key], str) and (error := _message_error(row[key], key)):
            return error
    if isinstance(chosen, str) != isinstance(rejected, str):
        return "'chosen' and 'rejected' must both be strings or both be message lists"
    for key in PAIR_KEYS:
        if row[key] == []:
            return f"'{key}' is empty: there is no answer to prefer or avoid"
    if chosen == rejected and (not isinstance(chosen, str) or chosen.strip()):
        return _SAME
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(chosen, str):
            if not isinstance(prompt, str):
                return f"'prompt' must be a string when the answers are, got {json_type_name(prompt)}"
            if not prompt.strip():
                return "'prompt' is empty"
        else:
            if isinstance(prompt, str):
                return (
                    "'prompt' is a string but the answers are message lists: give the prompt as a list of "
                    "{role, content} messages too, or the answers as strings"
                )
            if error := _message_error(prompt, "prompt"):
                return error
            if not prompt:
                return "'prompt' has no message"
    elif isinstance(chosen, str):
        return "missing 'prompt': text answers need the prompt they answer"
    elif shared_prefix(chosen, rejected) == 0:
        return "missing 'prompt': 'chosen' and 'rejected' do not start with the same messages, so there is no prompt"
    _, chosen, rejected = split_pair(row)
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        if error := _answer_error(answer, key):
            return error
    if chosen == rejected:
        return _SAME
    return None


_SAME = "'chosen' and 'rejected' are the same answer, so there is nothing to prefer"


def is_conversational(row: dict) -> bool:
    return not isinstance(row.get("chosen"), str)


def prompt_of(row: dict, tokenizer: Any = None) -> str | None:
    """The pair's prompt as the model reads it (the chat template's rendering with a generation prompt for
    messages; None when that needs a template the tokenizer lacks)."""
    prompt, _, _ = split_pair(row)
    if isinstance(prompt, str):
        return prompt
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return None
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def render_pair(tokenizer: Any, row: dict) -> tuple[str, str, str]:
    """(prompt, prompt + chosen, prompt + rejected) as the text the model reads; TRL renders them the same way.
    Text answers get the end-of-sequence token, as TRL adds it."""
    prompt, chosen, rejected = split_pair(row)
    if isinstance(prompt, str):
        eos = getattr(tokenizer, "eos_token", None) or ""

        def ended(text: str) -> str:
            return text if not eos or text.endswith(eos) else text + eos

        return prompt, prompt + ended(chosen), prompt + ended(rejected)
    render = tokenizer.apply_chat_template
    return (
        render(prompt, tokenize=False, add_generation_prompt=True),
        render(prompt + chosen, tokenize=False),
        render(prompt + rejected, tokenize=False),
    )


def _common(left: list[int], right: list[int]) -> int:
    count = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        count += 1
    return count


def pair_lengths(tokenizer: Any, rendered: Sequence[tuple[str, str, str]]) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token counts of each rendered pair: an answer's tokens are those after the
    prefix its sequence shares with the prompt, as TRL splits them."""
    lengths = []
    for prompt, with_chosen, with_rejected in rendered:
        encoded = tokenizer([prompt, with_chosen, with_rejected], add_special_tokens=False, verbose=False)["input_ids"]
        prompt_ids, chosen_ids, rejected_ids = encoded
        cut = min(_common(prompt_ids, chosen_ids), _common(prompt_ids, rejected_ids))
        lengths.append((cut, len(chosen_ids) - cut, len(rejected_ids) - cut))
    return lengths


def encode_pairs(
    rows: Sequence[dict],
    tokenizer: Any,
    *,
    limits: Any = None,
    model: str = "",
    max_errors: int = DEFAULT_MAX_ERRORS,
    first_row: int = 1,
) -> list[tuple[int, int, int]]:
    """Token counts of every pair. With `limits` (TemplateLimits) the chat template runs in a limited child
    process, as for chat rows; DatasetError names the rows the template cannot render (rows[0] is row
    `first_row`)."""
    if any(is_conversational(row) for row in rows[:1]) and not has_chat_template(tokenizer):
        raise DatasetError([no_chat_template_problem()])

    def render_all() -> list[Any]:
        out: list[Any] = []
        for row in rows:
            try:
                out.append(list(render_pair(tokenizer, row)))
            except Exception as exc:  # a template error names the row; anything else too
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    try:
        rendered = render_all() if limits is None else run_limited(render_all, limits, model)
    except TemplateLimitExceeded as exc:
        raise DatasetError([exc.problem]) from None
    collector = ProblemCollector(max_errors)
    for number, outcome in enumerate(rendered, first_row):
        if isinstance(outcome, str):
            collector.add(
                Problem(
                    CHAT_TEMPLATE_ERROR,
                    f"{RowRef(number)}: the model's chat template cannot render this pair: {outcome}.",
                    "Check the roles and their order: many templates need user and assistant turns to alternate.",
                )
            )
    collector.raise_if_any()
    return pair_lengths(tokenizer, [tuple(item) for item in rendered])


def objective_problem(objective: str, fmt: str | None, path: str = "") -> Problem | None:
    """A dataset whose rows do not fit the training objective: pairs for SFT, or anything else for DPO."""
    where = f"{path} holds" if path else "The dataset holds"
    if objective == "dpo" and fmt is not None and fmt != PREFERENCE:
        return Problem(
            "dataset_not_pairs",
            f"{where} '{fmt}' rows, but the DPO objective trains on preference pairs.",
            f"Use a dataset of pairs, each row like {PAIR_SHAPE}; or set the training objective to sft.",
        )
    if objective != "dpo" and fmt == PREFERENCE:
        return Problem(
            "dataset_is_pairs",
            f"{where} preference pairs (chosen/rejected), which supervised fine-tuning (sft) does not train on.",
            "Set the training objective to dpo to train on these pairs, or use a dataset of prompts and answers.",
        )
    return None
