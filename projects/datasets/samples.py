"""Small datasets a new member can train on at once: prompt/completion pairs written under the first allowed
dataset root by `manage.py create_sample_dataset` (`make run`), and a preference set a DPO run learns quickly."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

SAMPLE_FOLDER = "sample"
SAMPLE_NAME = "sample-qa.jsonl"
_OPPOSITES = [("hot", "cold"), ("up", "down"), ("early", "late"), ("open", "closed"), ("light", "dark")]
_GREETINGS = [("Alice", "Hello Alice!"), ("Bob", "Hello Bob!"), ("the team", "Hello everyone!")]


def sample_rows() -> list[dict[str, str]]:
    rows = []
    for a in range(2, 7):
        for b in (1, 3, 4):
            rows.append({"prompt": f"Question: what is {a} plus {b}? Answer:", "completion": f" {a + b}."})
    rows += [{"prompt": f"The opposite of {word} is", "completion": f" {other}."} for word, other in _OPPOSITES]
    rows += [{"prompt": f"Say hello to {name}:", "completion": f" {answer}"} for name, answer in _GREETINGS]
    return rows


def write_sample_dataset(root: str | os.PathLike) -> tuple[Path, bool]:
    """The sample file under `root` and whether it was written now (False: it was there already, left as is)."""
    path = Path(root) / SAMPLE_FOLDER / SAMPLE_NAME
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in sample_rows()), encoding="utf-8")
    return path, True


def find_sample_dataset(roots: list[str]) -> Path | None:
    """The sample file under an allowed dataset root, when one is there (a plain file, not a link)."""
    for root in roots:
        path = Path(root) / SAMPLE_FOLDER / SAMPLE_NAME
        if path.is_file() and not path.is_symlink():
            return path
    return None


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
