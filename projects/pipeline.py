"""The run state machine: queued → resolving → training → validating → succeeded | failed | cancelled.

Views, the API and tasks call these functions with ids and plain values. Every transition is a conditional
UPDATE on the row (status must still be what we expect), so a cancel and a worker never overwrite each other,
and every failure records its stage, message and hint on the row — no run is left "running" by a failure.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback

from django.db import transaction
from django.utils import timezone

from mtm.shared.paths import is_within
from mtm.shared.problems import Problem
from projects.models import LIVE_STATUSES, RunStage, RunStatus, TrainingProject, TrainingRun
from projects.ownership import output_dir_conflicts

log = logging.getLogger(__name__)


class RunRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def live_run_on(output_directory: str, exclude_run: int | None = None) -> TrainingRun | None:
    """A live run writing to `output_directory`, to a folder inside it, or to a folder that contains it."""
    real = os.path.realpath(output_directory)
    runs = TrainingRun.objects.filter(status__in=LIVE_STATUSES).select_related("project").order_by("pk")
    if exclude_run:
        runs = runs.exclude(pk=exclude_run)
    for run in runs:
        for other in {run.output_directory, os.path.realpath(run.output_directory)} - {""}:
            if is_within(real, other) or is_within(other, real):
                return run
    return None


def start_run(project: TrainingProject, user, *, resume: bool = False) -> TrainingRun:
    """Save a queued run and enqueue its first task once the transaction commits."""
    with transaction.atomic():
        # Lock the project row so two Start presses cannot both pass the live-run check.
        TrainingProject.objects.select_for_update().filter(pk=project.pk).first()
        busy = live_run_on(project.output_directory)
        if busy:
            same = busy.output_directory == os.path.realpath(project.output_directory)
            overlap = "" if same else f", which overlaps this project's output directory {project.output_directory}"
            raise RunRefused(
                Problem(
                    "output_directory_busy",
                    f"Run {busy.pk} of project '{busy.project.name}' is {busy.status} and writes to "
                    f"{busy.output_directory}{overlap}.",
                    "Wait for it to end or cancel it, or give this project another output directory.",
                )
            )
        if conflicts := output_dir_conflicts(project.output_directory, user, project):
            raise RunRefused(conflicts[0])
        run = TrainingRun.objects.create(
            project=project,
            started_by=user if getattr(user, "is_authenticated", False) else None,
            resume=resume,
            output_directory=os.path.realpath(project.output_directory),
        )
        transaction.on_commit(lambda: enqueue(run.pk))
    return run


def enqueue(run_id: int) -> bool:
    """Publish the run's first task. When the broker is down the run ends "failed" at "queue" with a clear
    message: nothing was started, and Start can simply be pressed again."""
    from projects.tasks import resolve_run

    try:
        result = resolve_run.apply_async(
            (run_id,),
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
        )
    except Exception as exc:  # kombu raises OperationalError and friends, depending on the transport
        log.warning("broker unavailable for run %s: %s", run_id, exc)
        fail(
            run_id,
            RunStage.QUEUE,
            Problem(
                "broker_unavailable",
                f"The run could not be queued: the task broker did not answer ({type(exc).__name__}: {exc}).",
                "Nothing was started. Check that Redis (REDIS_URL) is running, then press Start again.",
            ),
        )
        return False
    record_task_id(run_id, "resolve", result.id)
    return True


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


def request_cancel(run: TrainingRun) -> bool:
    """Cancel a run: one not yet training ends at once; a training one stops at its next step and saves a
    checkpoint (the supervisor sees the flag). False when the run had already ended."""
    now = timezone.now()
    if transition(
        run.pk, (RunStatus.QUEUED, RunStatus.RESOLVING), RunStatus.CANCELLED, finished_at=now, cancel_requested=True
    ):
        return True
    return bool(
        TrainingRun.objects.filter(pk=run.pk, status__in=(RunStatus.TRAINING, RunStatus.VALIDATING)).update(
            cancel_requested=True
        )
    )


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
