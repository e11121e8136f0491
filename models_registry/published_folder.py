"""Whether a published model's folder is still the one its run wrote, asked by the resolver for every published name.

The answer is the projects app's: a run's folder, the identity the train stage recorded for it and the manifest the
trainer writes last are its own (projects.runs.folder). So projects registers its check here in its
AppConfig.ready(), and the registry asks through this module without importing projects.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

from models_registry.models import PublishedModel
from mtm.shared.problems import Problem

FolderCheck = Callable[[PublishedModel], Problem | None]
_checks: list[FolderCheck] = []


def register_folder_check(check: FolderCheck) -> None:
    """Add `check` (published model → why its folder may not be read now, or None); once, however often called."""
    if check not in _checks:
        _checks.append(check)


def published_folder_problem(published: PublishedModel) -> Problem | None:
    """Why `published`'s folder may not be read now (the first registered check's problem), or None."""
    if not _checks:  # never "no problem" by default: the check guards against a run folder swapped after publishing
        raise ImproperlyConfigured(
            "No check of published model folders is registered: the projects app registers one in its "
            "AppConfig.ready(); add 'projects' to INSTALLED_APPS."
        )
    for check in _checks:
        if problem := check(published):
            return problem
    return None
