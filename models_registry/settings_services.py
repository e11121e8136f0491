"""Changing the Directory Settings (the Model Cache Path and the allowed roots, the upload quota, the live runs per
member): the one way in for the Settings page, the admin and the API. The checks, the lock on the single row and the
audit record are the same whatever the channel. The live-run limit is the workers' scheduling setting (the fair share
keeps it too), saved through workers.services."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from models_registry.edits import cache_path_problem, clean_roots
from models_registry.models import PortalSettings
from models_registry.settings_checks import path_problem
from mtm import audit
from mtm.audit import Actor
from mtm.shared.problems import Problem
from workers.services import live_run_limit_problem, set_live_run_limit

SETTINGS_FIELDS = ("model_cache_path", "allowed_output_roots", "allowed_dataset_roots")  # paths, checked inline
LIVE_RUNS_FIELD = "live_runs_per_member"  # stored in workers.SchedulingSettings
OTHER_SETTINGS_FIELDS = ("upload_quota_bytes", LIVE_RUNS_FIELD)
AUDITED_SETTINGS_FIELDS = SETTINGS_FIELDS + OTHER_SETTINGS_FIELDS
PORTAL_ROW_FIELDS = (*SETTINGS_FIELDS, "upload_quota_bytes")
ROOT_FIELDS = ("allowed_output_roots", "allowed_dataset_roots")
MAX_UPLOAD_QUOTA = 2**62


class SettingsRefused(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def settings_values(row: PortalSettings) -> dict[str, Any]:
    return {name: getattr(row, name) for name in PORTAL_ROW_FIELDS}


def clean_settings(updates: dict[str, Any]) -> dict[str, Any]:
    """The updates stripped and normalised (roots de-duplicated); SettingsRefused with every problem otherwise."""
    cleaned = {k: v for k, v in updates.items() if k in AUDITED_SETTINGS_FIELDS}
    problems: list[Problem] = []
    if "upload_quota_bytes" in cleaned:
        quota = cleaned["upload_quota_bytes"]
        if isinstance(quota, bool) or not isinstance(quota, int) or not 0 <= quota <= MAX_UPLOAD_QUOTA:
            problems.append(
                Problem(
                    "invalid_upload_quota",
                    f"Upload quota {quota!r} is not a whole number of bytes between 0 and {MAX_UPLOAD_QUOTA}.",
                    "Give the bytes of uploaded datasets each user may keep, e.g. 10737418240 for 10 GiB; 0: no limit.",
                )
            )
    if LIVE_RUNS_FIELD in cleaned and (problem := live_run_limit_problem(cleaned[LIVE_RUNS_FIELD])):
        problems.append(problem)
    if "model_cache_path" in cleaned:
        value = cleaned["model_cache_path"] = (cleaned["model_cache_path"] or "").strip()
        if problem := cache_path_problem(value) or (value and path_problem(value, "Model Cache Path")):
            problems.append(problem)
    for name in ROOT_FIELDS:
        if name in cleaned:
            cleaned[name], found = clean_roots(name, list(cleaned[name] or []))
            problems += found
            problems += [p for i, root in enumerate(cleaned[name]) if (p := path_problem(root, f"{name}[{i}]"))]
    if problems:
        raise SettingsRefused(problems)
    return cleaned


def update_settings(updates: dict[str, Any], *, actor: Actor) -> dict[str, list[Any]]:
    """Save the fields given (others keep their values); returns the changes ({field: [old, new]}), audited."""
    cleaned = clean_settings(updates)
    limit = cleaned.pop(LIVE_RUNS_FIELD, None)
    with transaction.atomic():
        PortalSettings.load()  # the row exists before it is locked
        row = PortalSettings.objects.select_for_update().get(pk=1)
        before = settings_values(row)
        changes = audit.diff(before, {**before, **cleaned})
        for name, value in cleaned.items():
            setattr(row, name, value)
        row.updated_by = actor.authenticated_user
        row.save()
        if changes:
            audit.record_change(actor, "portal_settings.update", row, changes)
        if limit is not None:
            changes |= set_live_run_limit(limit, actor=actor, action="portal_settings.update")
    return changes
