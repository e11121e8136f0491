"""The models of the shared Hugging Face cache that hold their name, and their organisation, against publishing.

Members can write in the cache, so a repo folder there holds a name only when it holds a model: the model list
shows it with a snapshot that passes the list's checks. An empty `models--org--x/`, one whose snapshot holds no
model, a repo folder that is a link, and one the list did not check (past its owner's budget) hold nothing.
"""

from __future__ import annotations

from pathlib import Path

from models_registry.listing import list_cached, listing_store

__all__ = ["cached_models"]


def cached_models(cache_dir: Path) -> list[str]:
    """The names (org/name) of the cache's repos that the model list shows as valid models."""
    return [
        item.model_name
        for item in list_cached(cache_dir, listing_store())
        if item.valid and item.model_name.count("/") == 1
    ]
