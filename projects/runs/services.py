"""Starting and cancelling runs: the one way in for the page and the API.

Each function takes the Actor, owns its checks and locking, writes the audit record, and (for Start) publishes the
run's first task once the transaction has committed, so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

import logging

from django.db import transaction

from models_registry.deep_state import cached_refusal
from models_registry.lookup import dataset_roots, resolve_model
from mtm import audit
from mtm.audit import Actor
from mtm.shared.paths import is_within, resolved
from mtm.shared.problems import Problem
from projects.datasets import check_dataset_path
from projects.datasets.uploads import upload_problems
from projects.models import RunStage, RunStatus, TrainingProject, TrainingRun
from projects.ownership import lock_claims, output_dir_conflicts, unresolvable_problem
from projects.runs import records
from projects.runs.config import RunConfig
from projects.runs.scheduling.fit import model_shape
from projects.runs.scheduling.live_run_cap import cap_problem, lock_member
from projects.runs.scheduling.placement import PlacementRefused, place
from projects.runs.state_machine import CancelOutcome, fail, live_run_on, record_task_id, request_cancel
from projects.runs.tasks import resolve_run

log = logging.getLogger(__name__)
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


class RunRefused(Exception):
    """A Start that cannot be honoured. `conflict`: refused because of another live run (it can pass later)."""

    def __init__(self, problem: Problem, *, conflict: bool = False):
        super().__init__(problem.message)
        self.problem = problem
        self.conflict = conflict


def start_run(
    project: TrainingProject, *, actor: Actor, resume: bool = False, resume_from: TrainingRun | None = None
) -> TrainingRun:
    """Save a queued run and enqueue its first task once the transaction commits. The run writes in a folder of
    its own (projects.runs.records) and keeps a copy of the project's settings (projects.runs.config). A resume
    continues from a complete checkpoint of `resume_from` (a run of this project; the latest run when not
    given); a run is refused while another live run writes to the same folder, and when the member who starts it
    has as many live runs as the cap allows (projects.runs.scheduling.live_run_cap)."""
    # The model's files are read before any lock is taken: only the decisions are made under the locks.
    shape = model_shape(project)
    # transformers' cached refusal stops Start at once; a model not yet checked is checked by the resolve stage.
    if refusal := cached_refusal(resolve_model(project.model_name, project.revision or None)):
        raise RunRefused(refusal)
    with transaction.atomic():
        lock_member(actor.authenticated_user)  # one member's Starts in turn, so they cannot pass the cap together
        # Lock the project row so two Start presses cannot both pass the live-run check (delete takes it too).
        TrainingProject.objects.select_for_update().filter(pk=project.pk).first()
        lock_claims()  # the run's folder becomes a claim too
        real = resolved(project.output_directory)
        if real is None:
            raise RunRefused(unresolvable_problem(project.output_directory))
        # First whether the folder is still this project's: one swapped for a link must say so, not "busy".
        if conflicts := output_dir_conflicts(project.output_directory, actor.user, project):
            raise RunRefused(conflicts[0])
        busy = live_run_on(project.output_directory)
        if busy:
            same = is_within(busy.run_folder, real)
            overlap = "" if same else f", which overlaps this project's output directory {project.output_directory}"
            raise RunRefused(
                Problem(
                    "output_directory_busy",
                    f"Run {busy.pk} of project '{busy.project.name}' is {busy.status} and writes to "
                    f"{busy.run_folder}{overlap}.",
                    "Wait for it to end or cancel it, or give this project another output directory.",
                ),
                conflict=True,
            )
        # Training on an upload (or evaluating on one) is for its owner and staff, whoever set it on the project.
        for path in (project.dataset_path, project.eval_dataset_path):
            located = check_dataset_path(path, dataset_roots()) if path else None
            if located is not None and (not_yours := upload_problems(located, actor.user, None)):
                raise RunRefused(not_yours[0])
        config = RunConfig.of_project(project)
        source, checkpoint = None, None
        if resume or resume_from is not None:
            try:
                source, checkpoint = records.resume_source(project, resume_from)
            except records.ResumeRefused as refused:
                raise RunRefused(refused.problem) from None
            if problem := records.nothing_left_to_train(checkpoint, config):
                raise RunRefused(problem)
        if capped := cap_problem(actor.authenticated_user):
            raise RunRefused(capped, conflict=True)
        run = TrainingRun.objects.create(
            project=project,
            started_by=actor.authenticated_user,
            resume=source is not None,
            resume_source=source,
            resumed_from=str(checkpoint or ""),
            config=config.model_dump(),
        )
        run.run_folder = records.run_folder(real, run.pk)
        run.save(update_fields=["run_folder"])
        try:
            queue = place(run, shape).queue
        except PlacementRefused as refused:
            raise RunRefused(refused.problem) from refused
        changes = {"status": [None, run.status], "resume": [None, run.resume]}
        if source is not None:
            changes["resumed_from"] = [None, run.resumed_from]
        audit.record_change(actor, "run.start", run, changes)
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
