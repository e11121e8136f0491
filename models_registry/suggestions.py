"""Names of listed models that a mistyped name was probably meant to be: the same name in another case, then
names within a few edits of it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_SUGGESTIONS = 3
CLOSENESS = 0.8


def similar_names(name: str, known: Iterable[str]) -> list[str]:
    """Up to MAX_SUGGESTIONS names from `known` close to `name`, best first; never `name` itself."""
    by_lower: dict[str, str] = {}
    for candidate in known:
        if candidate != name:
            by_lower.setdefault(candidate.lower(), candidate)
    lowered = name.lower()
    close = difflib.get_close_matches(lowered, list(by_lower), n=MAX_SUGGESTIONS, cutoff=CLOSENESS)
    # The same name in another case first, whatever difflib's ordering.
    ordered = ([lowered] if lowered in by_lower else []) + [c for c in close if c != lowered]
    return [by_lower[c] for c in ordered[:MAX_SUGGESTIONS]]
