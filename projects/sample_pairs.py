"""A small preference set a DPO run can learn quickly: each prompt names a word, and both answers repeat it; the
chosen answer ends calmly with a full stop, the rejected one shouts with an exclamation mark. Whether a base model
prefers one ending depends on the word, so it prefers chosen about half the time; the rule holds for every word, so
held-out preference accuracy shows whether it was learnt (near 1 after training)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

WORDS = [
    "apple", "river", "stone", "cloud", "green", "table", "paper", "light", "music", "garden", "window", "silver",
    "orange", "forest", "summer", "winter", "bridge", "candle", "pencil", "rocket", "planet", "button", "castle",
    "dragon",
]  # fmt: skip
_ASKS = ["Say the word", "Repeat the word", "Tell me the word", "Read out the word"]


def sample_pairs(count: int = 48, seed: int = 0) -> list[dict[str, str]]:
    """`count` pairs {prompt, chosen, rejected}; the same for the same seed."""
    rng = random.Random(seed)
    pairs = []
    for index in range(count):
        word = rng.choice(WORDS)
        ask = _ASKS[index % len(_ASKS)]
        pairs.append({"prompt": f"{ask} {word}:", "chosen": f" {word}.", "rejected": f" {word}!"})
    return pairs


def write_sample_pairs(path: str | os.PathLike, count: int = 48, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in sample_pairs(count, seed)), encoding="utf-8")
    return path
