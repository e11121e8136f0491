"""Who may do what with a project: every member sees every project; only its owner or staff change it."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from projects.models import TrainingProject, TrainingRun


def can_manage(user: Any, project: TrainingProject) -> bool:
    """True for the project's owner and for staff: they may edit, start, cancel and delete."""
    if not (getattr(user, "is_authenticated", False) and user.is_active):
        return False
    return user.is_staff or project.owner_id == user.pk


def require_manage(user: Any, project: TrainingProject, action: str) -> None:
    """PermissionDenied (403) naming the project, its owner and the action, unless `user` may manage it."""
    if not can_manage(user, project):
        raise PermissionDenied(
            f"Only the owner of project '{project.name}' ({project.owner.get_username()}) or staff may {action}."
        )


def can_view(user: Any, project: TrainingProject) -> bool:
    """True for every active, signed-in member: every member sees every project and its runs."""
    return bool(getattr(user, "is_authenticated", False) and user.is_active)


def visible_runs(user: Any) -> QuerySet[TrainingRun]:
    """The runs `user` may see: today every run of every project for an active member, none for anyone else. Pages
    and the API that read runs a member picks by id (the comparison) go through this one filter, so an id of a run
    the member may not see reads exactly like an id that does not exist."""
    runs = TrainingRun.objects.select_related("project", "project__owner", "started_by")
    if not (getattr(user, "is_authenticated", False) and user.is_active):
        return runs.none()
    return runs
