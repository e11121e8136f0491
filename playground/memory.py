"""The memory playground models hold, by physical device (host and CUDA index), so the GPUs page and placement count
it against the device, whichever worker (training or inference) sees that device."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from playground.models import LoadedModel
from workers.devices import physical_index


def loaded_by_device() -> dict[tuple[str, str], list[LoadedModel]]:
    """Models loaded by live workers, keyed by (host, physical device index); CPU models are left out."""
    from workers.models import Worker

    cutoff = timezone.now() - timedelta(seconds=settings.MTM_WORKER_GONE_SECONDS)
    workers = {
        w.name: w
        for w in Worker.objects.filter(stopped_at__isnull=True, last_seen__gte=cutoff).only(
            "name", "host", "cuda_visible_devices"
        )
    }
    found: dict[tuple[str, str], list[LoadedModel]] = defaultdict(list)
    for row in LoadedModel.objects.filter(worker_name__in=list(workers), device_index__isnull=False):
        worker = workers[row.worker_name]
        found[(worker.host, physical_index(worker.cuda_visible_devices, row.device_index))].append(row)
    return found


def loaded_by_worker() -> dict[str, list[LoadedModel]]:
    found: dict[str, list[LoadedModel]] = defaultdict(list)
    for row in LoadedModel.objects.all():
        found[row.worker_name].append(row)
    return found
