"""Fair share: a member may have at most N runs taken by workers at once (a staff setting). A run beyond it stays
"queued", saying why, and is offered again shortly; the worker meanwhile takes the next run in its queue."""

from __future__ import annotations

from django.db.models import Q

from projects.models import RunStatus, TrainingRun
from workers.models import RunPlacement, SchedulingSettings

RETRY_SECONDS = 5
TAKEN = (RunStatus.RESOLVING, RunStatus.TRAINING, RunStatus.VALIDATING)


def over_limit(run_id: int) -> str:
    """Why this queued run must wait for its owner's other runs, or "" when it may start."""
    limit = SchedulingSettings.load().max_live_runs_per_user
    run = TrainingRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).select_related("project").first()
    if not limit or run is None:
        return ""
    owner_id = run.started_by_id or run.project.owner_id
    mine = Q(started_by_id=owner_id) | Q(started_by__isnull=True, project__owner_id=owner_id)
    live = TrainingRun.objects.filter(mine, status__in=TAKEN).count()
    if live < limit:
        return ""
    why = f"its owner's other runs to end (at most {limit} live run{'s' if limit != 1 else ''} per member)"
    RunPlacement.objects.filter(run_id=run_id).update(waiting_for=why)
    return why
