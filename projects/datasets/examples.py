"""Rows to training examples: token ids, and labels that are -100 wherever the model should not learn."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from models_registry.template_sandbox import TemplateLimitExceeded, TemplateLimits, run_limited, too_large
from mtm.shared.problems import Problem
from projects.datasets.errors import (
    CHAT_TEMPLATE_ERROR,
    DEFAULT_MAX_ERRORS,
    DatasetError,
    ProblemCollector,
    RowRef,
    has_chat_template,
    no_chat_template_problem,
)
from projects.datasets.formats import SUPPORTED_FORMATS, check_rows

IGNORE_INDEX = -100
_TOKENIZE_BATCH = 1000
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

# A segment is text (or ids already tokenized) and whether the model learns it.
Segment = tuple[str | list[int], bool]


class Examples(list):
    """The examples ({"input_ids": [...], "labels": [...]} dicts), plus what building them had to do."""

    def __init__(self, items=(), *, truncated: int = 0, dropped: int = 0, max_seq_length: int | None = None):
        super().__init__(items)
        self.truncated = truncated
        self.dropped = dropped
        self.max_seq_length = max_seq_length

    def summary(self) -> dict[str, int | None]:
        return {
            "examples": len(self),
            "truncated": self.truncated,
            "dropped": self.dropped,
            "max_seq_length": self.max_seq_length,
            "tokens": sum(len(e["input_ids"]) for e in self),
            "trainable_tokens": sum(sum(1 for label in e["labels"] if label != IGNORE_INDEX) for e in self),
        }


def alpaca_prompt(row: dict) -> str:
    """The fixed plain template for alpaca rows; the model learns what follows it (the output)."""
    extra = row.get("input") or ""
    if extra.strip():
        return f"### Instruction:\n{row['instruction']}\n\n### Input:\n{extra}\n\n### Response:\n"
    return f"### Instruction:\n{row['instruction']}\n\n### Response:\n"


def prompt_text(row: dict, fmt: str, tokenizer: Any = None) -> str | None:
    """What the model is asked to continue for this row (used for the inference test); None for plain text."""
    if fmt == "prompt_completion":
        return row["prompt"]
    if fmt == "alpaca":
        return alpaca_prompt(row)
    if fmt == "messages" and tokenizer is not None and has_chat_template(tokenizer):
        messages = row["messages"]
        first_answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), 0)
        if first_answer == 0:
            return None
        return _render(tokenizer, messages[:first_answer], True)
    return None


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _chat_segments_by_prefix(tokenizer: Any, messages: list[dict]) -> list[Segment] | None:
    """Split the rendered conversation at each assistant turn by rendering the conversation up to it: the text
    up to the turn plus the generation prompt is what the model sees at inference time, so it is not learnt;
    the rest of the turn (content and end-of-turn marker) is. None when the template renders a conversation's
    beginning differently from the same messages alone (then the prefixes do not line up)."""
    turns = [
        (_render(tokenizer, messages[:index], True) if index else "", _render(tokenizer, messages[: index + 1], False))
        for index, message in enumerate(messages)
        if message["role"] == "assistant"
    ]
    full = turns[-1][1] if messages[-1]["role"] == "assistant" else _render(tokenizer, messages, False)
    segments: list[Segment] = []
    done = 0
    for before, through in turns:
        if len(before) < done or not through.startswith(before) or not full.startswith(through):
            return None
        segments.append((full[done : len(before)], False))
        segments.append((through[len(before) :], True))
        done = len(through)
    segments.append((full[done:], False))
    return [s for s in segments if s[0]]


def _chat_segments_by_mask(tokenizer: Any, messages: list[dict]) -> list[Segment]:
    """For templates that mark assistant text with {% generation %}: transformers reports the tokens itself."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    segments: list[Segment] = []
    for token, learn in zip(out["input_ids"], out["assistant_masks"], strict=True):
        if segments and segments[-1][1] == bool(learn):
            segments[-1][0].append(token)  # type: ignore[union-attr]
        else:
            segments.append(([token], bool(learn)))
    return segments


def _chat_segments(tokenizer: Any, messages: list[dict]) -> list[Segment]:
    segments = _chat_segments_by_prefix(tokenizer, messages)
    if segments is not None:
        return segments
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if _GENERATION_TAG.search(template):
        return _chat_segments_by_mask(tokenizer, messages)
    raise ValueError(
        "the chat template renders earlier turns differently once later turns follow, so the assistant turns "
        "cannot be located"
    )


# A rendered conversation may hold its messages, the template's own text and markers around each turn, but not
# more than this many times the characters of its messages plus this much: anything longer is a runaway template.
_RENDER_GROWTH = 4
_RENDER_EXTRA_CHARS = 64 * 1024


def _segments_or_error(tokenizer: Any, messages: list[dict]) -> list[Segment] | str:
    try:
        segments = _chat_segments(tokenizer, messages)
    except MemoryError:  # the template's fault, not the row's: the caller reports it for the model
        raise
    except Exception as exc:  # a chat template is arbitrary Jinja code: any error is this row's problem
        return str(exc)
    given = sum(len(str(m.get("content", ""))) for m in messages)
    rendered = sum(len(content) for content, _ in segments)
    if rendered > given * _RENDER_GROWTH + _RENDER_EXTRA_CHARS:
        raise MemoryError("the chat template built far more text than the conversation holds")
    return segments


# What one limited child renders at most: a request's whole sample fits in one; the worker's full pass takes several.
_CHUNK_CONVERSATIONS = 2000
_CHUNK_CHARS = 8 * 1024 * 1024


def _chunks(conversations: list[list[dict]]) -> list[list[list[dict]]]:
    chunks: list[list[list[dict]]] = [[]]
    chars = 0
    for messages in conversations:
        size = sum(len(str(m.get("content", ""))) for m in messages)
        if chunks[-1] and (len(chunks[-1]) >= _CHUNK_CONVERSATIONS or chars + size > _CHUNK_CHARS):
            chunks.append([])
            chars = 0
        chunks[-1].append(messages)
        chars += size
    return chunks


def render_conversations(
    tokenizer: Any, conversations: list[list[dict]], limits: TemplateLimits | None = None, model: str = ""
) -> list[list[Segment] | str]:
    """Each conversation's segments, or why the chat template cannot render it. With `limits` the template runs
    in limited child processes, one per chunk of conversations; raises TemplateLimitExceeded when one exceeds
    them. Without, it runs here (for code that is already in a limited process, such as the trainer)."""
    model = model or f"'{getattr(tokenizer, 'name_or_path', '') or 'unnamed'}'"
    if limits is None:
        try:
            return [_segments_or_error(tokenizer, messages) for messages in conversations]
        except MemoryError:
            raise TemplateLimitExceeded(too_large(model, None)) from None
    rendered: list[list[Segment] | str] = []
    for chunk in _chunks(conversations):
        rendered.extend(
            run_limited(lambda chunk=chunk: [_segments_or_error(tokenizer, m) for m in chunk], limits, model)
        )
    return rendered


def _row_segments(row: dict, fmt: str) -> list[Segment]:
    if fmt == "text":
        return [(row["text"], True)]
    if fmt == "prompt_completion":
        return [(row["prompt"], False), (row["completion"], True)]
    return [(alpaca_prompt(row), False), (row["output"], True)]


def _tokenize_all(tokenizer: Any, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(texts), _TOKENIZE_BATCH):
        batch = texts[start : start + _TOKENIZE_BATCH]
        ids.extend(
            tokenizer(batch, add_special_tokens=add_special_tokens, return_attention_mask=False, verbose=False)[
                "input_ids"
            ]
        )
    return ids


def encode_rows(
    rows: Sequence[dict],
    fmt: str,
    tokenizer: Any,
    *,
    max_errors: int = DEFAULT_MAX_ERRORS,
    template_limits: TemplateLimits | None = None,
    model: str = "",
    first_row: int = 1,
    checked: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of every row, not truncated, with EOS appended. Raises DatasetError naming rows from
    `first_row` (the number of rows[0] in its file). `checked`: the rows are known good rows of `fmt` (a RowChecker
    took them), so they are not checked again.

    With `template_limits`, the chat template runs in a limited child process and one that exceeds the limits
    is a chat_template_too_slow / chat_template_too_large problem naming `model`.

    Segments are tokenized separately, so the boundary between what is learnt and what is not is exact. Only a
    row's first segment gets the tokenizer's special tokens (BOS) for text formats; chat templates write theirs.
    """
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(SUPPORTED_FORMATS)}")
    if fmt == "messages" and not has_chat_template(tokenizer):
        raise DatasetError([no_chat_template_problem()])
    if not checked:
        check_rows(rows, fmt, max_errors=max_errors, first_row=first_row)
    collector = ProblemCollector(max_errors)
    per_row: list[list[Segment]] = []
    if fmt != "messages":
        per_row = [_row_segments(row, fmt) for row in rows]
    else:
        try:
            rendered = render_conversations(tokenizer, [row["messages"] for row in rows], template_limits, model)
        except TemplateLimitExceeded as exc:
            raise DatasetError([exc.problem]) from None
        for number, outcome in enumerate(rendered, first_row):
            if not isinstance(outcome, str):
                per_row.append(outcome)
                continue
            collector.add(
                Problem(
                    CHAT_TEMPLATE_ERROR,
                    f"{RowRef(number)}: the model's chat template cannot render this conversation: {outcome}.",
                    "Check the roles and their order: many templates need user and assistant turns to alternate "
                    "and accept 'system' only first.",
                )
            )
            if collector.full:
                break
    collector.raise_if_any()

    first_special = fmt != "messages"
    texts = {True: [], False: []}  # by add_special_tokens
    for segments in per_row:
        for position, (content, _) in enumerate(segments):
            if isinstance(content, str):
                texts[first_special and position == 0].append(content)
    tokenized = {flag: iter(_tokenize_all(tokenizer, items, flag)) for flag, items in texts.items() if items}

    eos = getattr(tokenizer, "eos_token_id", None)
    encoded = []
    for segments in per_row:
        ids: list[int] = []
        labels: list[int] = []
        for position, (content, learn) in enumerate(segments):
            piece = next(tokenized[first_special and position == 0]) if isinstance(content, str) else content
            ids.extend(piece)
            labels.extend(piece if learn else [IGNORE_INDEX] * len(piece))
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
            labels.append(eos if segments and segments[-1][1] else IGNORE_INDEX)
        encoded.append((ids, labels))
    return encoded


# A token covers at least one character and, in practice, far fewer than this many: a string cut here still has
# more tokens than the max sequence length whenever the whole string does, so truncation counts stay right while a
# megabyte-long row is never tokenized whole (by the form's token count, or by the trainer a thousand rows at once).
CHARS_PER_TOKEN_CAP = 64


def cut_to_length(rows: Sequence[dict], max_seq_length: int | None) -> list[dict]:
    """The rows with every string cut to max_seq_length × CHARS_PER_TOKEN_CAP characters (None: unchanged)."""
    if not max_seq_length:
        return list(rows)
    limit = max_seq_length * CHARS_PER_TOKEN_CAP

    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return value[:limit]
        if isinstance(value, list):
            return [cut(v) for v in value]
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        return value

    return [cut(row) for row in rows]


def build_examples(
    rows: Sequence[dict],
    fmt: str,
    tokenizer: Any,
    max_seq_length: int | None,
    *,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> Examples:
    """Training examples for rows of one format (see detect_format), truncated to max_seq_length (None: no limit).

    Loss is on everything for "text", on the completion for "prompt_completion", on the output for "alpaca" and
    on the assistant turns for "messages". Examples left with nothing to learn are dropped; both truncations and
    drops are counted on the result. Raises DatasetError (no_chat_template, chat_template_error).
    """
    if max_seq_length is not None and max_seq_length < 1:
        raise ValueError("max_seq_length must be a positive number of tokens")
    examples = Examples(max_seq_length=max_seq_length)
    for ids, labels in encode_rows(cut_to_length(rows, max_seq_length), fmt, tokenizer, max_errors=max_errors):
        if max_seq_length is not None and len(ids) > max_seq_length:
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
            examples.truncated += 1
        if all(label == IGNORE_INDEX for label in labels):
            examples.dropped += 1
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples
