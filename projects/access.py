"""Who may do what with a project: every member sees every project; only its owner or staff change it."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

from projects.models import TrainingProject


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
