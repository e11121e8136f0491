"""The run state machine: queued → resolving → training → validating → succeeded | failed | cancelled.

Services and tasks call these functions with ids and plain values; nothing here knows of Celery (the first task
is enqueued by projects.runs.services, the next ones by projects.runs.tasks). Every transition is a conditional
UPDATE on the row (status must still be what we expect), so a cancel and a worker never overwrite each other,
and every failure records its stage, message and hint on the row — no run is left "running" by a failure.
"""

from __future__ import annotations

import os
import socket
import traceback
from enum import StrEnum

from django.utils import timezone

from mtm.shared.claims import claim_form
from mtm.shared.paths import is_within, resolved
from mtm.shared.problems import Problem
from projects.models import LIVE_STATUSES, RunStage, RunStatus, TrainingRun


def live_run_on(output_directory: str, exclude_run: int | None = None) -> TrainingRun | None:
    """A live run writing to `output_directory`, to a folder inside it, or to a folder that contains it. A run's
    folder swapped for a link since it was made claims nothing (mtm.shared.claims)."""
    real = resolved(output_directory) or os.path.normpath(output_directory)
    runs = TrainingRun.objects.filter(status__in=LIVE_STATUSES).select_related("project").order_by("pk")
    if exclude_run:
        runs = runs.exclude(pk=exclude_run)
    for run in runs:
        other = claim_form(run.run_folder)
        if other is not None and (is_within(real, other) or is_within(other, real)):
            return run
    return None


def record_task_id(run_id: int, stage: str, task_id: str) -> None:
    run = TrainingRun.objects.filter(pk=run_id).only("task_ids").first()
    if run:
        TrainingRun.objects.filter(pk=run_id).update(task_ids={**(run.task_ids or {}), stage: task_id})


def transition(run_id: int, expected: RunStatus | tuple, new: RunStatus, **fields) -> bool:
    """Move a run from `expected` to `new` (with extra field updates); False when it was not in `expected`."""
    allowed = expected if isinstance(expected, tuple) else (expected,)
    return bool(TrainingRun.objects.filter(pk=run_id, status__in=allowed).update(status=new, **fields))


def fail(run_id: int, stage: RunStage, problem: Problem, log_extra: str = "") -> bool:
    """End a live run as failed at `stage`. Does nothing to a run that has already ended."""
    run = TrainingRun.objects.filter(pk=run_id).only("log_tail").first()
    if run is None:
        return False
    tail = run.log_tail
    if log_extra:
        tail = (tail + "\n" + log_extra).strip()[-20_000:]
    return transition(
        run_id,
        LIVE_STATUSES,
        RunStatus.FAILED,
        stage_failed=stage,
        error_code=problem.code,
        error_message=problem.message,
        error_hint=problem.hint,
        finished_at=timezone.now(),
        log_tail=tail,
    )


def fail_with_exception(run_id: int, stage: RunStage, exc: BaseException) -> None:
    fail(
        run_id,
        stage,
        Problem(
            "internal_error",
            f"The {stage} stage failed unexpectedly: {type(exc).__name__}: {exc}",
            "The traceback is in the run's log. Start the run again; report it if it repeats.",
        ),
        log_extra=traceback.format_exc(),
    )


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it had not started training: it ended at once
    REQUESTED = "requested"  # it is training or validating: it stops at its next step and saves a checkpoint
    ENDED = "ended"  # it had already ended: nothing to do


def request_cancel(run_id: int) -> CancelOutcome:
    """Cancel a run: one not yet training ends at once; a training one stops at its next step and saves a
    checkpoint (the supervisor sees the flag)."""
    now = timezone.now()
    if transition(
        run_id, (RunStatus.QUEUED, RunStatus.RESOLVING), RunStatus.CANCELLED, finished_at=now, cancel_requested=True
    ):
        return CancelOutcome.CANCELLED
    flagged = TrainingRun.objects.filter(pk=run_id, status__in=(RunStatus.TRAINING, RunStatus.VALIDATING)).update(
        cancel_requested=True
    )
    return CancelOutcome.REQUESTED if flagged else CancelOutcome.ENDED


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
