"""Where a run waits and who took it: the run's queue (Celery hands it to the first free worker consuming it), its
place in line among the runs sent to the same queue, and the worker that took it."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from projects.models import RunStatus, TrainingRun
from workers.models import RunPlacement

TRAINING_QUEUE = "training"


def training_queue() -> str:
    return settings.CELERY_TASK_ROUTES.get("projects.resolve_run", {}).get("queue", TRAINING_QUEUE)


def place(run: TrainingRun) -> RunPlacement:
    """Record the queue the run is sent to (inside Start's transaction)."""
    return RunPlacement.objects.create(run=run, queue=training_queue(), waiting_for="a free training worker")


def record_taker(run_id: int, worker_name: str) -> None:
    """Called by the worker that took the run from its queue, before it starts on it."""
    RunPlacement.objects.filter(run_id=run_id, run__status=RunStatus.QUEUED).update(worker_name=worker_name[:255])


@dataclass(frozen=True)
class PlaceInLine:
    ahead: int  # queued runs sent to the same queue before this one
    waiting_for: str
    queue: str

    def __str__(self) -> str:
        runs = "no run" if self.ahead == 0 else ("1 run" if self.ahead == 1 else f"{self.ahead} runs")
        return f"waiting for {self.waiting_for}: {runs} ahead"


def place_in_line(run: TrainingRun) -> PlaceInLine | None:
    """The run's place in its queue's line while it is queued; None once a worker took it or it ended."""
    if run.status != RunStatus.QUEUED:
        return None
    placement = RunPlacement.objects.filter(run=run).first()
    if placement is None:
        return None
    ahead = RunPlacement.objects.filter(
        queue=placement.queue, run__status=RunStatus.QUEUED, run_id__lt=run.pk, worker_name=""
    ).count()
    return PlaceInLine(ahead=ahead, waiting_for=placement.waiting_for or "a free worker", queue=placement.queue)


def waiting_runs() -> list[tuple[TrainingRun, PlaceInLine]]:
    """Every queued run with its place in line, oldest first (the GPUs page)."""
    runs = (
        TrainingRun.objects.filter(status=RunStatus.QUEUED)
        .select_related("project", "project__owner", "started_by", "placement")
        .order_by("pk")
    )
    placed = [run for run in runs if hasattr(run, "placement")]
    return [(run, line) for run in placed if (line := place_in_line(run)) is not None]
