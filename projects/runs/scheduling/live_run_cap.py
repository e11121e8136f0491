"""The per-member cap on live runs (SchedulingSettings.live_runs_per_member, the limit the workers' fair share keeps
too): a Start that would give a member more runs queued, resolving, training or validating than the cap is refused,
naming the runs that count.

A run counts for the member who pressed Start (a run started before that was recorded counts for its project's
owner). Staff are held to the cap too: their runs wait in the same queues as everyone's, and they can raise it.
The count and the new run are one step: start_run calls `lock_member` first, in its transaction."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q

from mtm.shared.problems import Problem
from projects.models import LIVE_STATUSES, TrainingRun
from workers.models import SchedulingSettings

CODE = "live_run_cap"
NAMED = 10  # runs listed by name in the refusal; more are counted


def members_runs(user_id: int) -> Q:
    """The runs that count for a member: started by them, or (started before that was recorded) of their project."""
    return Q(started_by_id=user_id) | Q(started_by__isnull=True, project__owner_id=user_id)


def lock_member(user: Any) -> None:
    """Lock the member's row until the transaction ends, so one member's parallel Starts count in turn (the fair
    share's take locks the same row). On SQLite every write transaction is serialised anyway (BEGIN IMMEDIATE)."""
    if user is not None:
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()


def cap_problem(user: Any) -> Problem | None:
    """Why `user` may not start another run now, or None. Call after `lock_member(user)`, inside the transaction
    that creates the run. Nobody (the command line acting as nobody) has no cap."""
    cap = SchedulingSettings.load().live_runs_per_member
    if not cap or user is None:
        return None
    live = list(
        TrainingRun.objects.filter(members_runs(user.pk), status__in=LIVE_STATUSES)
        .select_related("project")
        .order_by("pk")
    )
    if len(live) < cap:
        return None
    listed = [f"#{run.pk} of '{run.project.name}' ({run.status})" for run in live[:NAMED]]
    if len(live) > NAMED:
        listed.append(f"{len(live) - NAMED} more")
    runs = f"{len(live)} live run{'s' if len(live) != 1 else ''}"
    raise_it = "raise" if user.is_staff else "ask staff to raise"
    return Problem(
        CODE,
        f"You have {runs}, and one member may have at most {cap} at once: {_and(listed)}.",
        f"Wait for one of them to end, or cancel one on its page, then press Start again; or {raise_it} "
        "'Live runs per member' in Settings.",
    )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
