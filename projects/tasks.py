"""Celery tasks: thin wrappers that re-fetch the run by id and call a stage (any exception fails the run), and the
periodic reaper that Celery beat runs (CELERY_BEAT_SCHEDULE in mtm/settings.py)."""

from __future__ import annotations

from celery import shared_task

from projects import stages
from projects.liveness import heartbeat, reap_stale_runs
from projects.models import RunStage
from projects.pipeline import fail_with_exception, record_task_id


def _guarded(run_id: int, stage: RunStage, fn):
    try:
        with heartbeat(run_id):
            return fn(run_id)
    except Exception as exc:
        fail_with_exception(run_id, stage, exc)
        return False


def _enqueue_next(run_id: int, stage: RunStage, task, queue: str) -> None:
    try:
        record_task_id(run_id, task.name.rsplit(".", 1)[-1], task.apply_async((run_id,), queue=queue).id)
    except Exception as exc:  # the broker went away between two stages
        fail_with_exception(run_id, stage, exc)


@shared_task(name="projects.resolve_run")
def resolve_run(run_id: int) -> None:
    if _guarded(run_id, RunStage.RESOLVE, stages.resolve_stage):
        _enqueue_next(run_id, RunStage.RESOLVE, train_run, "training")


@shared_task(name="projects.train_run")
def train_run(run_id: int) -> None:
    if _guarded(run_id, RunStage.TRAIN, stages.train_stage):
        _enqueue_next(run_id, RunStage.TRAIN, validate_run, "default")


@shared_task(name="projects.validate_run")
def validate_run(run_id: int) -> None:
    _guarded(run_id, RunStage.VALIDATE, stages.validate_stage)


@shared_task(name="projects.reap_stale_runs", ignore_result=True)
def reap_runs() -> list[int]:
    """Fail the live runs whose worker stopped beating; scheduled by Celery beat."""
    return reap_stale_runs()


@shared_task(name="projects.cleanup_uploads")
def cleanup_uploads() -> int:
    """Periodic (Celery beat): remove uploads no project references once past the grace period."""
    from projects.uploads import cleanup_uploads as remove_unreferenced

    return len(remove_unreferenced())
