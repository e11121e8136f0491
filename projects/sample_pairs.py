"""A small preference set a DPO run can learn quickly: each prompt asks for a word, the chosen answer is always a
polite word and the rejected one a rude word, paired at random. The rule holds for pairs the model never saw, so
held-out preference accuracy shows whether it was learnt (about chance before training, near 1 after)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

_POLITE = ["please", "thanks", "kindly", "gladly", "welcome", "sorry", "cheers", "certainly"]
_RUDE = ["go away", "no way", "whatever", "shut up", "get lost", "not now", "buzz off", "drop it"]
_ASKS = ["Reply to the guest", "Answer the customer", "Respond to the visitor", "Say something to the caller"]


def sample_pairs(count: int = 48, seed: int = 0) -> list[dict[str, str]]:
    """`count` pairs {prompt, chosen, rejected}; the same for the same seed."""
    rng = random.Random(seed)
    pairs = []
    for index in range(count):
        ask = _ASKS[index % len(_ASKS)]
        pairs.append(
            {
                "prompt": f"{ask} number {index}:",
                "chosen": f" {rng.choice(_POLITE)}.",
                "rejected": f" {rng.choice(_RUDE)}.",
            }
        )
    return pairs


def write_sample_pairs(path: str | os.PathLike, count: int = 48, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in sample_pairs(count, seed)), encoding="utf-8")
    return path
