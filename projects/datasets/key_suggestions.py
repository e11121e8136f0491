""" "Did you mean …" for a row whose keys name no supported shape: a key one of the shapes lacks, guessed from a
common other name for it (answer → completion) or a near spelling (promt → prompt, Prompt → prompt)."""

from __future__ import annotations

import difflib

# Other names datasets use for the keys of the supported shapes.
SYNONYMS: dict[str, str] = {
    "answer": "completion",
    "response": "completion",
    "target": "completion",
    "question": "prompt",
    "query": "prompt",
    "input_text": "prompt",
    "conversation": "messages",
    "conversations": "messages",
    "dialog": "messages",
    "chat": "messages",
    "body": "text",
    "content": "text",
}


def suggest_keys(keys: list[str], shapes: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """(key in the row, key it probably stands for) pairs that would complete one of `shapes` (name → required
    keys), best shape first: the one the row needs fewest renames for."""
    best: list[tuple[str, str]] | None = None
    for required in shapes.values():
        missing = [key for key in required if key not in keys]
        spare = [key for key in keys if key not in required]
        renames = []
        for wanted in missing:
            match = next((key for key in spare if SYNONYMS.get(key.lower()) == wanted), None)
            match = match or next((key for key in spare if key.lower() == wanted), None)
            if match is None:
                close = difflib.get_close_matches(wanted, [key.lower() for key in spare], n=1, cutoff=0.75)
                match = next((key for key in spare if close and key.lower() == close[0]), None)
            if match is None:
                break
            renames.append((match, wanted))
            spare.remove(match)
        else:
            if renames and (best is None or len(renames) < len(best)):
                best = renames
    return best or []


def did_you_mean(keys: list[str], shapes: dict[str, tuple[str, ...]]) -> str:
    renames = suggest_keys(keys, shapes)
    if not renames:
        return ""
    return " Did you mean " + " and ".join(f"'{wanted}' instead of '{key}'" for key, wanted in renames) + "?"
