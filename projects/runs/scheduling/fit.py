"""Which live workers can host a project's run: enough memory on each of its devices (or RAM on a CPU worker) by
the memory pre-flight (an estimate per device: each rank of a multi-device run holds a whole copy), as many devices
as the run asks for, and the model in the worker's own cache."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from models_registry.lookup import resolve_model
from models_registry.published import UNPUBLISH_ACTION, last_event
from models_registry.resolution import Resolution
from mtm.shared.problems import Problem
from projects.models import TrainingProject
from projects.runs.scheduling.memory_estimate import (
    Estimate,
    EstimateError,
    ModelShape,
    estimate,
    read_model_shape,
    setup_for,
)
from workers.devices import physical_index
from workers.holds import held_by_device
from workers.models import Worker


def live_training_workers() -> list[Worker]:
    cutoff = timezone.now() - timedelta(seconds=settings.MTM_WORKER_GONE_SECONDS)
    workers = Worker.objects.filter(stopped_at__isnull=True, last_seen__gte=cutoff).prefetch_related("devices")
    return [w for w in workers if w.trains]


@dataclass(frozen=True)
class Fit:
    worker: Worker
    estimate: Estimate | None  # None: the model's files could not be read here, so memory is not checked
    room_bytes: int  # the smallest device's memory (RAM on a CPU worker)
    holds_model: bool
    devices_needed: int = 1  # the project's devices: the run spans this many of one worker's

    @property
    def enough_devices(self) -> bool:
        return self.worker.device_count >= self.devices_needed

    @property
    def on_gpu(self) -> bool:
        return bool(self.worker.devices.all())

    @property
    def fits_memory(self) -> bool:
        return self.estimate is None or self.estimate.total_bytes <= self.room_bytes

    @property
    def fits(self) -> bool:
        return self.holds_model and self.fits_memory and self.enough_devices


def read_shape(project: TrainingProject) -> tuple[ModelShape | None, str]:
    """The model's shape from the files this host sees, or None and why not (no readable copy here, or a file of it
    that is not a regular file or too large: those are refused, never waited on)."""
    resolution = resolve_model(project.model_name, project.revision or None)
    if not resolution.valid or not resolution.path:
        return None, ""
    try:
        return read_model_shape(Path(resolution.path)), ""
    except EstimateError as exc:
        return None, str(exc)


def model_shape(project: TrainingProject) -> ModelShape | None:
    """The model's shape from the files this host sees; None when it has no readable copy."""
    return read_shape(project)[0]


def unpublished_at(model_name: str) -> datetime | None:
    """When the name was last unpublished here; None if never. A worker's report older than that lists it from
    before, when it still resolved through the portal."""
    event = last_event(UNPUBLISH_ACTION, model_name)
    return event.at if event else None


def holds(worker: Worker, model_name: str, unpublished: datetime | None = None) -> bool:
    """A worker that reports its models must list this one, in a report written after the name was last unpublished
    (`unpublished`); one that reports none yet is not ruled out."""
    if worker.held_models is None:
        return True
    listed_at = worker.held_models_at or worker.last_seen
    return model_name in worker.held_models and (unpublished is None or listed_at > unpublished)


def held_elsewhere(model_name: str, resolution: Resolution) -> Problem | None:
    """When this host's cache lacks the model (and nothing else is wrong with the name) but live training workers
    report holding it: a note naming them, in place of the not-found error. None otherwise."""
    if resolution.valid or {p.code for p in resolution.errors} != {"model_not_found"}:
        return None
    unpublished = unpublished_at(model_name)
    holders = [w.name for w in live_training_workers() if w.held_models and holds(w, model_name, unpublished)]
    if not holders:
        return None
    return Problem(
        "model_on_workers",
        f"Model '{model_name}' is not in this host's cache; the training worker(s) {', '.join(holders)} hold it "
        "and resolve it against their own cache when they train.",
        "",
    )


def fits_for(project: TrainingProject, shape: ModelShape | None, workers: list[Worker]) -> list[Fit]:
    hp = project.hyperparameter_values
    held = held_by_device()  # models the playground holds count against their device
    unpublished = unpublished_at(project.model_name)
    found = []
    for worker in workers:
        devices = list(worker.devices.all())
        on_gpu = bool(devices)
        rooms = []
        for d in devices:
            on_device = held.get((worker.host, physical_index(worker.cuda_visible_devices, d.index)), [])
            rooms.append(d.total_bytes - sum(m.bytes for m in on_device))
        room = min(rooms, default=worker.ram_bytes)
        bf16 = all(d.bf16 for d in devices) if devices else False
        need = estimate(shape, setup_for(project.method, hp, on_gpu=on_gpu, bf16=bf16)) if shape else None
        found.append(Fit(worker, need, room, holds(worker, project.model_name, unpublished), hp.devices))
    return found
