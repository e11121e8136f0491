"""Starting and cancelling runs: the one way in for the page and the API.

Each function takes the Actor, owns its checks and locking, writes the audit record, and (for Start) publishes the
run's first task once the transaction has committed, so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

import logging

from django.db import transaction

from models_registry.services import dataset_roots
from mtm import audit
from mtm.audit import Actor
from mtm.shared.paths import resolved
from mtm.shared.problems import Problem
from projects.datasets import check_dataset_path
from projects.display import latest_checkpoint
from projects.models import RunStage, RunStatus, TrainingProject, TrainingRun
from projects.ownership import lock_claims, output_dir_conflicts, unresolvable_problem
from projects.pipeline import CancelOutcome, fail, live_run_on, record_task_id, request_cancel
from projects.tasks import resolve_run
from projects.uploads import upload_problems
from workers.placement import PlacementRefused, place

log = logging.getLogger(__name__)
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


class RunRefused(Exception):
    """A Start that cannot be honoured. `conflict`: refused because of another live run (it can pass later)."""

    def __init__(self, problem: Problem, *, conflict: bool = False):
        super().__init__(problem.message)
        self.problem = problem
        self.conflict = conflict


def start_run(project: TrainingProject, *, actor: Actor, resume: bool = False) -> TrainingRun:
    """Save a queued run and enqueue its first task once the transaction commits. A resume needs a complete
    checkpoint in the output directory; a run is refused while another live run writes to the same folder."""
    with transaction.atomic():
        # Lock the project row so two Start presses cannot both pass the live-run check (delete takes it too).
        TrainingProject.objects.select_for_update().filter(pk=project.pk).first()
        lock_claims()  # the run's folder becomes a claim too
        real = resolved(project.output_directory)
        if real is None:
            raise RunRefused(unresolvable_problem(project.output_directory))
        busy = live_run_on(project.output_directory)
        if busy:
            same = busy.output_directory == real
            overlap = "" if same else f", which overlaps this project's output directory {project.output_directory}"
            raise RunRefused(
                Problem(
                    "output_directory_busy",
                    f"Run {busy.pk} of project '{busy.project.name}' is {busy.status} and writes to "
                    f"{busy.output_directory}{overlap}.",
                    "Wait for it to end or cancel it, or give this project another output directory.",
                ),
                conflict=True,
            )
        if conflicts := output_dir_conflicts(project.output_directory, actor.user, project):
            raise RunRefused(conflicts[0])
        # Training on an upload is for its owner and staff, whoever set it on the project.
        located = check_dataset_path(project.dataset_path, dataset_roots())
        if not_yours := upload_problems(located, actor.user, None):
            raise RunRefused(not_yours[0])
        if resume and latest_checkpoint(project) is None:
            raise RunRefused(
                Problem(
                    "no_checkpoint",
                    f"Cannot resume: there is no checkpoint in {project.output_directory} "
                    "(no checkpoint-N folder with a trainer_state.json).",
                    "Start a fresh run instead; a run saves a checkpoint every 'save_steps' steps and when cancelled.",
                )
            )
        run = TrainingRun.objects.create(
            project=project,
            started_by=actor.authenticated_user,
            resume=resume,
            output_directory=real,
        )
        try:
            queue = place(run).queue
        except PlacementRefused as refused:
            raise RunRefused(refused.problem) from refused
        audit.record_change(actor, "run.start", run, {"status": [None, run.status], "resume": [None, resume]})
        transaction.on_commit(lambda: enqueue(run.pk, queue))
    return run


def enqueue(run_id: int, queue: str | None = None) -> bool:
    """Publish the run's task to its queue. When the broker is down the run ends "failed" at "queue" with a clear
    message: nothing was started, and Start can simply be pressed again."""
    try:
        result = resolve_run.apply_async((run_id,), queue=queue, retry=True, retry_policy=RETRY_POLICY)
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


def cancel_run(run: TrainingRun, *, actor: Actor) -> CancelOutcome:
    """Cancel a run. The audit record says what happened: a run not yet training is cancelled at once
    (status → cancelled); a training one is asked to stop (cancel_requested → true, the status stays until the
    trainer has saved a checkpoint and exited). A run that had already ended is left alone and nothing is recorded."""
    with transaction.atomic():
        current = TrainingRun.objects.select_for_update().filter(pk=run.pk).first()
        if current is None:
            return CancelOutcome.ENDED
        before = {"status": current.status, "cancel_requested": current.cancel_requested}
        outcome = request_cancel(run.pk)
        if outcome is not CancelOutcome.ENDED:
            after = {"status": RunStatus.CANCELLED.value if outcome is CancelOutcome.CANCELLED else current.status}
            if changes := audit.diff(before, {**after, "cancel_requested": True}):
                audit.record_change(actor, "run.cancel", run, changes)
    run.refresh_from_db()
    return outcome
