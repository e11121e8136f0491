"""A small dataset a new member can train on at once: short prompt/completion pairs (arithmetic, greetings,
opposites), written under the first allowed dataset root by `manage.py create_sample_dataset` (`make run`)."""

from __future__ import annotations

import json
import os
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
