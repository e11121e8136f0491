"""Changes to workers, through one function each that takes the Actor and writes the audit record."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from mtm import audit
from mtm.audit import Actor
from workers.models import SchedulingSettings, Worker


def set_drained(worker: Worker, drained: bool, *, actor: Actor) -> bool:
    """Drain a worker (it finishes the run it holds and takes no new one) or undrain it. Staff only. The worker
    applies it at its next report. Returns whether anything changed."""
    user = actor.authenticated_user
    if user is None or not user.is_staff:
        raise PermissionDenied("Only staff can drain or undrain a worker.")
    updated = Worker.objects.filter(pk=worker.pk).exclude(drained=drained).update(drained=drained)
    if updated:
        audit.record_change(
            actor, "worker.drain" if drained else "worker.undrain", worker, {"drained": [not drained, drained]}
        )
    worker.refresh_from_db()
    return bool(updated)


def set_live_run_limit(limit: int, *, actor: Actor) -> SchedulingSettings:
    """Set how many runs one member may have taken by workers at once (0: no limit). Staff only."""
    user = actor.authenticated_user
    if user is None or not user.is_staff:
        raise PermissionDenied("Only staff can change the per-member run limit.")
    if limit < 0 or limit > 10_000:
        raise ValueError(f"Live runs per member: {limit} is out of range; give 0 (no limit) to 10000.")
    row = SchedulingSettings.load()
    if row.max_live_runs_per_user != limit:
        audit.record_change(
            actor, "scheduling.update", row, {"max_live_runs_per_user": [row.max_live_runs_per_user, limit]}
        )
        row.max_live_runs_per_user = limit
        row.save()
    return row
