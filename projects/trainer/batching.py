"""From tokenized examples to training batches: optional packing, and the collators that pad.

Packing puts whole examples side by side in rows of at most max_seq_length tokens (best-fit decreasing, so
rows fill up and no example is ever split). Each example's position_ids restart at 0, the row has no
attention_mask, and transformers (>= 4.56, masking_utils.find_packed_sequence_indices) turns the restarts
into a block-diagonal causal mask for sdpa, eager and flash attention alike: an example never attends to its
neighbours, on CPU as on GPU. That detection only runs without a KV cache, so the model must run with
use_cache=False (the Trainer's default, and the child sets it); tests/test_trainer.py checks the losses match. The first label of every example is -100, so no example is asked to predict
the next one's first token; the targets are exactly those of unpacked training (the causal shift never
predicts an example's first token there either).

Every batch also carries REAL_TOKENS_KEY, the count of non-padding tokens as a Python int, counted here on
the CPU so that throughput reporting never waits for the GPU. The trainer pops it before the forward pass.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100
REAL_TOKENS_KEY = "mtm_real_tokens"

Example = dict[str, list[int]]


def trainable_examples(examples: Sequence[Example], max_seq_length: int) -> list[Example]:
    """Examples cut to max_seq_length that still have at least one loss target after the causal shift
    (an example whose completion was truncated away would only add a NaN or a zero to the loss)."""
    kept = []
    for example in examples:
        ids = list(example["input_ids"][:max_seq_length])
        labels = list(example["labels"][:max_seq_length])
        if len(ids) >= 2 and any(label != IGNORE_INDEX for label in labels[1:]):
            kept.append({"input_ids": ids, "labels": labels})
    return kept


def pack_examples(examples: Sequence[Example], max_seq_length: int) -> list[dict[str, list[int]]]:
    """Rows of whole examples, each at most max_seq_length tokens, with per-example position_ids.

    Best-fit decreasing: longest example first, into the open row whose free space fits it most tightly.
    Deterministic for a given input; the Trainer's sampler shuffles the rows.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[list[int]] = []  # example indices per row
    free: list[tuple[int, int]] = []  # sorted (free tokens, row index) of rows that still have room
    for index in order:
        size = min(len(examples[index]["input_ids"]), max_seq_length)
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            room, row = free.pop(slot)
        else:
            room, row = max_seq_length, len(rows)
            rows.append([])
        rows[row].append(index)
        if room - size > 0:
            bisect.insort(free, (room - size, row))
    return [_join([examples[i] for i in members], max_seq_length) for members in rows]


def _join(members: list[Example], max_seq_length: int) -> dict[str, list[int]]:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for example in members:
        ids = list(example["input_ids"][:max_seq_length])
        example_labels = list(example["labels"][: len(ids)])
        example_labels[0] = IGNORE_INDEX
        input_ids += ids
        labels += example_labels
        position_ids += range(len(ids))
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


class PaddedCollator:
    """Unpacked batches: right-padded to the longest row, with an attention_mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids, labels, mask = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            input_ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            REAL_TOKENS_KEY: sum(len(f["input_ids"]) for f in features),
        }


class PackedCollator:
    """Packed batches: rows padded to the longest one; the padding is a sequence of its own (its positions
    restart at 0) so real tokens never attend to it, and there is deliberately no attention_mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids, labels, positions = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            input_ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            positions.append(list(f["position_ids"]) + list(range(pad)))
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
            REAL_TOKENS_KEY: sum(len(f["input_ids"]) for f in features),
        }
