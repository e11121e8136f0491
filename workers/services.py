"""Changes to workers, through one function each that takes the Actor and writes the audit record."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import transaction

from mtm import audit
from mtm.audit import Actor
from mtm.shared.problems import Problem
from workers.models import MAX_LIVE_RUNS_PER_MEMBER, SchedulingSettings, Worker


class DrainRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def set_drained(worker: Worker, drained: bool, *, actor: Actor) -> bool:
    """Drain a training worker (it finishes the run it holds and takes no new one) or undrain it. Staff only. It
    holds at once: a drained worker refuses a run it receives before its next report stops its consumers
    (workers.drain). A worker that takes no training run (the checks worker, a playground worker) is refused:
    draining it would do nothing. Returns whether anything changed."""
    user = actor.authenticated_user
    if user is None or not user.is_staff:
        raise PermissionDenied("Only staff can drain or undrain a worker.")
    if drained and not worker.trains:
        raise DrainRefused(
            Problem(
                "not_a_training_worker",
                f"{worker.name} takes no training run (it consumes {', '.join(worker.queues) or 'no queue'}): "
                "there is nothing to drain.",
                "Drain a training worker (one started with runworker --gpus or --cpu); to stop this one, stop its "
                "process.",
            )
        )
    updated = Worker.objects.filter(pk=worker.pk).exclude(drained=drained).update(drained=drained)
    if updated:
        audit.record_change(
            actor, "worker.drain" if drained else "worker.undrain", worker, {"drained": [not drained, drained]}
        )
    worker.refresh_from_db()
    return bool(updated)


def live_run_limit_problem(limit: object) -> Problem | None:
    """Why `limit` cannot be the number of live runs one member may have, or None."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIVE_RUNS_PER_MEMBER:
        return Problem(
            "invalid_live_runs_per_member",
            f"Live runs per member {limit!r} is not a whole number between 0 and {MAX_LIVE_RUNS_PER_MEMBER}.",
            "Give how many runs one member may have queued or running at once, e.g. 2; 0: no limit.",
        )
    return None


def set_live_run_limit(limit: int, *, actor: Actor, action: str = "scheduling.update") -> dict[str, list[int]]:
    """Set how many live runs one member may have (0: no limit): both the cap at Start and the fair share on the
    queues. Staff only; audited as `action` (the GPUs page's, or the settings form's it was saved with). Returns the
    change ({field: [old, new]}), empty when the value was already that."""
    user = actor.authenticated_user
    if user is None or not user.is_staff:
        raise PermissionDenied("Only staff can change the per-member run limit.")
    if problem := live_run_limit_problem(limit):
        raise ValueError(problem.message)
    with transaction.atomic():
        SchedulingSettings.load()  # the row exists before it is locked
        row = SchedulingSettings.objects.select_for_update().get(pk=1)
        if row.live_runs_per_member == limit:
            return {}
        change = {"live_runs_per_member": [row.live_runs_per_member, limit]}
        row.live_runs_per_member = limit
        row.save()
        audit.record_change(actor, action, row, change)
    return change
