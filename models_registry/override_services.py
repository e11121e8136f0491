"""Creating, changing and deleting Model Overrides: the one way in for the admin and the API.

Each function takes the Actor, checks the values (the same checks whatever the channel), locks the row it
changes and writes the audit record.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from models_registry.edits import duplicate_override, override_problems
from models_registry.models import ModelOverride
from mtm import audit
from mtm.audit import Actor
from mtm.shared.claims import followed_identity
from mtm.shared.problems import Problem

OVERRIDE_FIELDS = ("model_name", "path", "enabled", "trust_remote_code", "note")


class OverrideRefused(Exception):
    """`conflict`: another override already has the name (a 409 in the API); otherwise the values are wrong."""

    def __init__(self, problems: list[Problem], *, conflict: bool = False):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems
        self.conflict = conflict


def override_values(override: ModelOverride) -> dict[str, Any]:
    return {name: getattr(override, name) for name in OVERRIDE_FIELDS}


def check_override(values: dict[str, Any], exclude_pk: int | None = None) -> None:
    """Raise OverrideRefused unless `values` (a complete set) may be saved."""
    if problems := override_problems(values["model_name"], values["path"]):
        raise OverrideRefused(problems)
    if problem := duplicate_override(values["model_name"], exclude_pk):
        raise OverrideRefused([problem], conflict=True)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    cleaned = {k: v for k, v in values.items() if k in OVERRIDE_FIELDS}
    if isinstance(cleaned.get("path"), str):
        cleaned["path"] = cleaned["path"].strip()
    return cleaned


def _save(override: ModelOverride) -> None:
    """Save with the identity of the folder its path leads to now (projects.ownership.override_forms)."""
    override.path_identity = followed_identity(override.path) if override.path.startswith("/") else ""
    try:
        with transaction.atomic():
            override.save()
    except IntegrityError:  # a concurrent save of the same name
        problem = duplicate_override(override.model_name, override.pk)
        raise OverrideRefused([problem] if problem else [], conflict=True) from None


def create_override(values: dict[str, Any], *, actor: Actor) -> ModelOverride:
    cleaned = {**override_values(ModelOverride()), **_clean(values)}
    check_override(cleaned)
    with transaction.atomic():
        override = ModelOverride(**cleaned, created_by=actor.authenticated_user, updated_by=actor.authenticated_user)
        _save(override)
        audit.record_change(actor, "model_override.create", override, {k: [None, v] for k, v in cleaned.items()})
    return override


def update_override(override: ModelOverride, updates: dict[str, Any], *, actor: Actor) -> ModelOverride:
    """Change some fields; those left out keep their values. Nothing is recorded when nothing changed."""
    with transaction.atomic():
        locked = ModelOverride.objects.select_for_update().get(pk=override.pk)
        before = override_values(locked)
        after = {**before, **_clean(updates)}
        check_override(after, exclude_pk=override.pk)
        for name, value in after.items():
            setattr(override, name, value)
        override.updated_by = actor.authenticated_user
        _save(override)
        if changes := audit.diff(before, after):
            audit.record_change(actor, "model_override.update", override, changes)
    return override


def delete_override(override: ModelOverride, *, actor: Actor) -> None:
    with transaction.atomic():
        changes = {name: [value, None] for name, value in override_values(override).items()}
        audit.record_change(actor, "model_override.delete", override, changes)
        override.delete()
