"""Fair share: a member may have at most N runs taken by workers at once, N being the one live-run limit
(SchedulingSettings.live_runs_per_member) that also caps her Starts (projects.runs.scheduling.live_run_cap). Start keeps
her live runs within it, so a run is held back here when the limit was lowered while her runs were queued: it stays
"queued", saying why, and is offered again shortly; the worker meanwhile takes the next run in its queue.

Checking the limit and taking the run are one step under a lock on the member's row: two workers taking two runs
of one member at the same moment cannot both count the other as not yet live (on SQLite every write transaction is
serialised anyway, as it begins IMMEDIATE)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from mtm.env import env_float
from projects.models import RunStatus, TrainingRun
from workers.drain import WorkerDrained, is_drained
from workers.models import RunPlacement, SchedulingSettings

# How soon a run held back by its owner's live-run limit is offered again; it waits as long as it takes.
RETRY_SECONDS = env_float("MTM_FAIR_SHARE_RETRY_SECONDS", 5.0)
TAKEN = (RunStatus.RESOLVING, RunStatus.TRAINING, RunStatus.VALIDATING)


def over_limit(run_id: int) -> str:
    """Why this queued run must wait for its owner's other runs, or "" when it may start (a look, not a claim)."""
    limit = SchedulingSettings.load().live_runs_per_member
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


def take(run_id: int, worker_host: str, worker_name: str = "") -> str | None:
    """Take a queued run for the worker `worker_host` (its placement records the node `worker_name`), within its
    owner's limit: "" when taken (the run is now "resolving", started by that worker), why it must wait when its
    owner is at the limit, None when the run is no longer queued (cancelled, or taken already). Raises
    WorkerDrained, taking nothing, when staff drained that worker (its row is locked while the run is taken, so a
    Drain saved meanwhile applies to the next run)."""
    with transaction.atomic():
        run = TrainingRun.objects.filter(pk=run_id).select_related("project").first()
        if run is None or run.status != RunStatus.QUEUED:
            return None
        if is_drained(worker_name, lock=True):
            raise WorkerDrained(worker_name)
        owner_id = run.started_by_id or run.project.owner_id
        get_user_model().objects.select_for_update().filter(pk=owner_id).first()  # one member's Starts in turn
        if why := over_limit(run_id):
            return why
        taken = TrainingRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RESOLVING,
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
            worker_host=worker_host[:255],
        )
        if not taken:
            return None
        RunPlacement.objects.filter(run_id=run_id).update(worker_name=worker_name[:255])
        return ""
