"""Celery tasks: thin wrappers that re-fetch the run by id and call its stages (any exception fails the run), and the
periodic reaper that Celery beat runs (CELERY_BEAT_SCHEDULE in mtm/settings.py)."""

from __future__ import annotations

from functools import partial

from celery import shared_task

from projects.models import RunStage
from projects.runs import stages
from projects.runs.liveness import heartbeat, reap_stale_runs
from projects.runs.scheduling.fair_share import RETRY_SECONDS, take
from projects.runs.scheduling.placement import hand_back
from projects.runs.state_machine import fail_with_exception, worker_identity
from workers.drain import WorkerDrained, stop_taking_runs


def _guarded(run_id: int, stage: RunStage, fn):
    try:
        with heartbeat(run_id):
            return fn(run_id)
    except Exception as exc:
        fail_with_exception(run_id, stage, exc)
        return False


# max_retries=None on the task: a run held back by its owner's live-run limit is offered again for as long as it
# waits (retry()'s own max_retries=None means "the task's default", which is 3, after which the run would stay queued for good).
@shared_task(name="projects.resolve_run", bind=True, max_retries=None)
def resolve_run(self, run_id: int) -> None:
    """A whole run on the worker that took it from its queue: resolve the model against this worker's own cache,
    train, validate. Until a worker takes it the run is "queued", which the reaper leaves alone."""
    # The owner's live-run limit checked and the run taken (by this worker, on record) under one lock.
    try:
        taken = take(run_id, worker_identity(), self.request.hostname or "")
    except WorkerDrained as drained:  # back to a queue another worker consumes; this one stops consuming first
        stop_taking_runs(self.app, drained.worker_name)
        queue = hand_back(run_id, drained.worker_name)
        raise self.retry(queue=queue, countdown=0) from None
    if taken is None:  # cancelled while it waited, or taken already
        return
    if taken:  # offered again shortly, to its queue; the run stays "queued", saying why
        raise self.retry(countdown=RETRY_SECONDS)
    if _guarded(run_id, RunStage.RESOLVE, partial(stages.resolve_stage, taken=True)) and _guarded(
        run_id, RunStage.TRAIN, stages.train_stage
    ):
        _guarded(run_id, RunStage.VALIDATE, stages.validate_stage)


@shared_task(name="projects.reap_stale_runs", ignore_result=True)
def reap_runs() -> list[int]:
    """Fail the live runs whose worker stopped beating; scheduled by Celery beat."""
    return reap_stale_runs()
