"""Whether a generated sample looks like a working model's answer: the inference test's verdict.

Generating some tokens proves little: a broken model still emits something. A sample fails when it is empty,
only special tokens, or one token or one character over and over: nothing was answered. Text that does not decode
(a model barely trained, or trained on bytes it cannot yet put together) and a very repetitive answer pass with
a warning naming it, so a short first run of a small model is not called broken, and not called fine either.
Pure Python, no Django and no torch, so the loading child and the tests use it alike.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

MIN_REPEATS = 4  # fewer repeated tokens are too short a sample to call degenerate
UNDECODABLE_SHARE = 0.25  # share of replacement or control characters from which the text counts as undecodable
REPETITIVE_WARN = 0.25  # distinct tokens / tokens below which a longer sample is called repetitive
REPETITIVE_MIN_TOKENS = 8
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str
    warning: str = ""


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _undecodable(text: str) -> int:
    return sum(
        1
        for char in text
        if char == REPLACEMENT or (unicodedata.category(char) in ("Cc", "Cs") and char not in "\n\t\r")
    )


def judge_sample(token_ids: list[int], text: str, special_ids: set[int], decode_one=None) -> Verdict:
    """The verdict on a greedy sample: `token_ids` are the generated ids, `text` their decoding without special
    tokens, `special_ids` the tokenizer's special token ids; `decode_one(id)` names a repeated token."""
    count = len(token_ids)
    if count == 0:
        return Verdict(False, "Empty output: the model generated no new token for the prompt.")
    ordinary = [token for token in token_ids if token not in special_ids]
    if not ordinary:
        return Verdict(
            False,
            f"Only special tokens: all {count} generated tokens are special (such as end-of-text or padding), so "
            "the answer is empty.",
        )
    stripped = text.strip()
    if not stripped:
        return Verdict(False, f"Empty output: the {count} generated tokens decode to whitespace only.")
    bad = _undecodable(stripped)
    if len(ordinary) >= MIN_REPEATS and len(set(ordinary)) == 1:
        token = decode_one(ordinary[0]) if decode_one else str(ordinary[0])
        return Verdict(False, f"One token repeated: {_shown(token)} {len(ordinary)} times and nothing else.")
    compact = "".join(stripped.split())
    if len(compact) >= MIN_REPEATS and len(set(compact)) == 1:
        return Verdict(False, f"One character repeated: {_shown(compact[0])} {len(compact)} times and nothing else.")
    detail = f"Generated {count} tokens greedily."
    warnings = []
    if bad / len(stripped) >= UNDECODABLE_SHARE:
        warnings.append(
            f"undecodable text: {bad} of {len(stripped)} characters are not valid text (replacement or control "
            f"characters), e.g. {_shown(stripped)}; the model does not answer in words yet"
        )
    elif bad:
        warnings.append(f"{bad} character(s) of the output are not valid text")
    if len(ordinary) >= REPETITIVE_MIN_TOKENS and len(set(ordinary)) / len(ordinary) < REPETITIVE_WARN:
        top, times = Counter(ordinary).most_common(1)[0]
        token = decode_one(top) if decode_one else str(top)
        warnings.append(
            f"very repetitive: {len(set(ordinary))} distinct tokens in {len(ordinary)}, {_shown(token)} {times} times"
        )
    warning = "; ".join(warnings)
    return Verdict(True, detail, warning[:1].upper() + warning[1:] + ("." if warning else ""))
