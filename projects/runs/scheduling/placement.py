"""Where a run waits and who took it: the run's queue (Celery hands it to the first free worker consuming it), its
place in line among the runs sent to the same queue, and the worker that took it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from django.conf import settings

from models_registry.published import unpublished_problem
from models_registry.resolution import repo_folder_name
from mtm.shared.problems import Problem
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.scheduling.fit import Fit, fits_for, live_training_workers, model_shape
from projects.runs.scheduling.memory_estimate import GIB, ModelShape, remedies
from workers.models import RunPlacement
from workers.queues import TRAINING_QUEUE, capacity_queue, devices_queue, own_queue, tier_for


def training_queue() -> str:
    return settings.CELERY_TASK_ROUTES.get("projects.resolve_run", {}).get("queue", TRAINING_QUEUE)


class PlacementRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def _where(fit: Fit) -> str:
    devices = list(fit.worker.devices.all())
    if devices:
        return f"{devices[0].name} ({_gib(fit.room_bytes)}) on {fit.worker.name}"
    return f"the CPU worker {fit.worker.name} ({_gib(fit.room_bytes)} RAM)"


def too_few_devices(project: TrainingProject, fits: list[Fit]) -> Problem:
    needed = fits[0].devices_needed
    most = max(f.worker.device_count for f in fits)
    owned = ", ".join(f"{f.worker.name}: {f.worker.device_count}" for f in fits)
    return Problem(
        "too_few_devices",
        f"This run asks for {needed} devices on one host, and no live training worker owns that many ({owned}).",
        f"Set the project's devices to {most} or fewer (raise gradient_accumulation_steps to keep the effective "
        f"batch), or start a worker that owns {needed}: manage.py runworker --gpus "
        + ",".join(map(str, range(needed)))
        + f" (or --cpu --processes {needed}).",
    )


def refusal(project: TrainingProject, fits: list[Fit], shape: ModelShape | None) -> Problem:
    """Why no live worker can host the run: the model is on none, the estimate exceeds every device, or none owns
    as many devices as the run asks for."""
    holders = [f for f in fits if f.holds_model]
    if holders and all(f.fits_memory for f in holders) and not any(f.enough_devices for f in holders):
        return too_few_devices(project, holders)
    if shape is not None and not holders:
        holders = fits  # see decide(): the memory is what rules them out
    if not holders:
        if (unpublished := unpublished_problem(project.model_name)) is not None:
            return unpublished
        caches = "; ".join(f"{f.worker.name}: {f.worker.hf_cache}" for f in fits)
        return Problem(
            "model_not_found",
            f"Model '{project.model_name}' not found. Please ensure the model is downloaded: no training worker "
            f"has it in its cache ({caches}).",
            f"1. Download it on a worker's machine: hf download {project.model_name}"
            + (f" --revision {project.revision}" if project.revision else "")
            + f". 2. Verify it is in that worker's cache: ls <cache>/{repo_folder_name(project.model_name)}/ "
            "3. Or ask staff to add a Model Override that maps this name to its folder on the workers.",
        )
    largest = max(holders, key=lambda f: f.room_bytes)
    need = largest.estimate
    assert need is not None and shape is not None  # holders that do not fit have an estimate
    breakdown = ", ".join(f"{label.lower()} {_gib(size)}" for label, size in need.rows())
    cures = "; ".join(f"{r.label}: {_gib(r.estimate.total_bytes)}" for r in remedies(shape, need)[:4])
    return Problem(
        "does_not_fit",
        f"This run needs about {_gib(need.total_bytes)} ({breakdown}); the largest device of the live workers is "
        f"{_where(largest)}.",
        f"Lower the need, then start again. {cures}." if cures else "Add a worker with a larger device.",
    )


def _line_length(queue: str) -> int:
    return RunPlacement.objects.filter(queue=queue, run__status=RunStatus.QUEUED, worker_name="").count()


def decide(project: TrainingProject, shape: ModelShape | None = None) -> tuple[str, str]:
    """The queue for a run of `project` and what it waits for. Raises PlacementRefused when live workers report
    and none can host it. With no live worker the run waits on the shared queue for one to start. `shape`: the
    model's shape when the caller read it already (Start reads it before taking its locks)."""
    workers = live_training_workers()
    needed = project.hyperparameter_values.devices
    if not workers:  # a run on several devices waits where only a worker owning that many looks
        if needed > 1:
            return devices_queue(needed), f"a training worker with ≥ {needed} devices (none is running now)"
        return training_queue(), "a training worker (none is running now)"
    shape = shape or model_shape(project)
    fits = fits_for(project, shape, workers)
    able = [f for f in fits if f.fits]
    # This host sees the model and no worker's last report lists it: a report may be a period behind the cache,
    # so the worker's own resolve decides (and fails the run clearly if the model is really not there).
    lagging = not able and shape is not None and not any(f.holds_model for f in fits)
    if lagging and any(f.fits_memory and f.enough_devices for f in fits):
        if needed > 1:
            return devices_queue(needed), f"a training worker with ≥ {needed} devices"
        return training_queue(), "a free training worker"
    if not able:
        raise PlacementRefused(refusal(project, fits, shape))
    open_able = [f for f in able if not f.worker.drained] or able
    if needed > 1:
        queue = devices_queue(needed)
        consumers = [f for f in fits if queue in f.worker.queues]
        if consumers and all(f.fits for f in consumers):
            return queue, f"a training worker with ≥ {needed} devices"
    gpu = [f for f in open_able if f.on_gpu]
    need = max((f.estimate.total_bytes for f in open_able if f.estimate), default=0)
    if gpu and need and (tier := tier_for(need)) is not None:
        queue = capacity_queue(len(list(gpu[0].worker.devices.all())), tier)
        consumers = [f for f in fits if queue in f.worker.queues]
        if consumers and all(f.fits for f in consumers):
            return queue, f"a GPU with ≥ {need / GIB:.0f} GiB" if need >= GIB else "a free GPU"
    if all(f.fits for f in fits) and all(training_queue() in f.worker.queues for f in fits):
        return training_queue(), "a free training worker"
    # Only some workers can host it (the model is not in every cache): the least busy of them, by its own queue.
    named = [f for f in open_able if own_queue(f.worker.name) in f.worker.queues]
    if not named:  # workers started without runworker have no queue of their own
        return training_queue(), "a free training worker"
    chosen = min(named, key=lambda f: _line_length(own_queue(f.worker.name)))
    return own_queue(chosen.worker.name), f"the worker {chosen.worker.name}"


def place(run: TrainingRun, shape: ModelShape | None = None) -> RunPlacement:
    """Record the queue the run is sent to (inside Start's transaction); PlacementRefused when nothing can host it.
    `shape`: the model's shape, read before the transaction took its locks."""
    queue, waiting_for = decide(run.project, shape)
    return RunPlacement.objects.create(run=run, queue=queue, waiting_for=waiting_for[:255])


HANDED_BACK = ", handed back by the drained worker "


def hand_back(run_id: int, worker_name: str) -> str:
    """The queue a run goes back to when the drained worker `worker_name` refused it: the same queue, or, when it was
    sent to that worker by name, the one decide() picks now (a worker that is not drained, when one can host it).
    Its placement says who handed it back."""
    placement = RunPlacement.objects.filter(run_id=run_id).select_related("run__project").first()
    if placement is None:
        return training_queue()
    queue, waiting_for = placement.queue, placement.waiting_for.partition(HANDED_BACK)[0]
    if queue == own_queue(worker_name):
        # When no other live worker can host it (PlacementRefused), it waits for this one to be undrained.
        with contextlib.suppress(PlacementRefused):
            queue, waiting_for = decide(placement.run.project)
    waiting_for = f"{waiting_for or 'a free worker'}{HANDED_BACK}{worker_name}"[:255]
    RunPlacement.objects.filter(pk=placement.pk).update(queue=queue, waiting_for=waiting_for)
    return queue


NAMED_AHEAD = 5  # runs ahead named, with their owners; more are counted


@dataclass(frozen=True)
class PlaceInLine:
    ahead: int  # queued runs sent to the same queue before this one
    waiting_for: str
    queue: str
    ahead_runs: tuple[tuple[int, str], ...] = ()  # the first NAMED_AHEAD of them: (run id, owner's username)

    def __str__(self) -> str:
        return f"waiting for {self.waiting_for}: {self.line()}"

    def line(self) -> str:
        """'no run ahead', or e.g. '3rd in line, behind runs #8 (alice) and #9 (bob)'."""
        if self.ahead == 0:
            return "no run ahead"
        named = [f"#{pk} ({owner})" for pk, owner in self.ahead_runs[:NAMED_AHEAD]]
        if self.ahead > len(named):
            named.append(f"{self.ahead - len(named)} more")
        runs = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        return f"{_ordinal(self.ahead + 1)} in line, behind run{'s' if self.ahead > 1 else ''} {runs}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def place_in_line(run: TrainingRun) -> PlaceInLine | None:
    """The run's place in its queue's line while it is queued, naming the runs ahead and whose they are; None once a
    worker took it or it ended."""
    if run.status != RunStatus.QUEUED:
        return None
    placement = RunPlacement.objects.filter(run=run).first()
    if placement is None:
        return None
    ahead = RunPlacement.objects.filter(
        queue=placement.queue, run__status=RunStatus.QUEUED, run_id__lt=run.pk, worker_name=""
    )
    first = ahead.order_by("run_id").values_list("run_id", "run__started_by__username", "run__project__owner__username")
    named = tuple((pk, started_by or owner) for pk, started_by, owner in first[:NAMED_AHEAD])
    return PlaceInLine(
        ahead=ahead.count(),
        waiting_for=placement.waiting_for or "a free worker",
        queue=placement.queue,
        ahead_runs=named,
    )


def waiting_runs() -> list[tuple[TrainingRun, PlaceInLine]]:
    """Every queued run with its place in line, oldest first (the GPUs page)."""
    runs = (
        TrainingRun.objects.filter(status=RunStatus.QUEUED)
        .select_related("project", "project__owner", "started_by", "placement")
        .order_by("pk")
    )
    placed = [run for run in runs if hasattr(run, "placement")]
    return [(run, line) for run in placed if (line := place_in_line(run)) is not None]
