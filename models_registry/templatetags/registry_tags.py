"""Presentation helpers for problems (message + hint) on the pages."""

from __future__ import annotations

import re

from django import template

register = template.Library()

_STEP = re.compile(r"(?:^|\s+)\d\.\s+")


@register.filter
def hint_steps(hint: str) -> list[str]:
    """A hint written as "1. Do this. 2. Then that." as its steps; any other hint as one item."""
    if not isinstance(hint, str) or not hint.startswith("1. "):
        return [hint] if hint else []
    steps = [step.strip() for step in _STEP.split(hint) if step.strip()]
    return steps or [hint]


@register.simple_tag
def cached_model_names() -> list[str]:
    """The names of the usable models listed (cache and overrides), for the model field's suggestions."""
    from models_registry.lookup import available_models

    _, listed = available_models(valid=True)
    return sorted(model.model_name for model in listed)
