"""A Celery worker reports itself to the database while it runs: a row per node (workers.Worker) with its host,
devices, CPU threads, RAM, library versions and HF cache, rewritten every MTM_WORKER_REPORT_SECONDS. A worker
that stops (or is killed) stops reporting and the GPUs page shows it gone. Staff's drain is applied here too:
the worker's consumers of the queues that bring runs are brought in line with its row (workers.drain).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psutil
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from workers.devices import CPU_PROCESSES_ENV
from workers.drain import resume_consuming, stop_consuming, worker_run_queues

log = logging.getLogger(__name__)
_stop = threading.Event()
_parts: list[Callable[[], dict[str, Any]]] = []
DEVICE_PROBE_SECONDS = 60.0  # device memory is asked again this often (a child process when torch is used)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 0


def cpu_processes() -> int:
    """What runworker --cpu --processes N set (MTM_CPU_PROCESSES); 1 otherwise."""
    raw = os.environ.get(CPU_PROCESSES_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) >= 1 else 1


def register_part(part: Callable[[], dict[str, Any]]) -> None:
    """Add a part to every report: a function returning fields of the worker's row that an app above the fleet
    knows (models_registry: the HF cache and the models it holds), registered in that app's AppConfig.ready()."""
    if part not in _parts:
        _parts.append(part)


def report_parts() -> dict[str, Any]:
    """The registered parts' fields (the registry's lists the cache: bounded, yet slower than the rest)."""
    parts: dict[str, Any] = {}
    for part in _parts:
        parts.update(part())
    return parts


def static_report(probed: dict[str, Any]) -> dict[str, Any]:
    """The worker's own fields: read at once, written as its heartbeat before the parts are gathered."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")[:255],
        "cpu_threads": cpu_threads(),
        "cpu_processes": cpu_processes(),
        "ram_bytes": psutil.virtual_memory().total,
        "versions": {
            "python": platform.python_version(),
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "cuda": probed.get("cuda", ""),
        },
    }


def write_report(
    name: str, queues: list[str], fields: dict[str, Any], devices: list[dict[str, Any]], seen: datetime | None = None
) -> bool:
    """Upsert the worker's row and its devices, seen at `seen` (now by default). Returns whether staff asked it to
    be drained."""
    from workers.models import Device, Worker

    now = seen or timezone.now()
    with transaction.atomic():
        worker, created = Worker.objects.get_or_create(
            name=name, defaults={"queues": queues, "started_at": now, **fields}
        )
        if not created:
            Worker.objects.filter(pk=worker.pk).update(queues=queues, last_seen=now, stopped_at=None, **fields)
        kept = []
        for device in devices:
            kept.append(device["index"])
            Device.objects.update_or_create(
                worker=worker,
                index=device["index"],
                defaults={k: device[k] for k in ("name", "total_bytes", "free_bytes", "bf16")},
            )
        Device.objects.filter(worker=worker).exclude(index__in=kept).delete()
    return Worker.objects.filter(pk=worker.pk).values_list("drained", flat=True).first() or False


def write_parts(name: str, parts: dict[str, Any], listed_at: datetime) -> None:
    """Add the parts to the worker's row, with when the models they name were listed (`listed_at`, before the
    listing: a name unpublished after it is stale in the list)."""
    from workers.models import Worker

    if "held_models" in parts:
        parts = {**parts, "held_models_at": listed_at}
    Worker.objects.filter(name=name).update(**parts)


def mark_stopped(name: str) -> None:
    from workers.models import Worker

    Worker.objects.filter(name=name).update(stopped_at=timezone.now())


class Reporter:
    """The reporting thread of one worker process (the Celery main process, not a pool child)."""

    def __init__(self, app: Any, name: str, queues: list[str], consumer: Any = None):
        self.app, self.name, self.queues = app, name, queues
        self.consumer = consumer  # Celery's consumer of this worker: which queues it consumes right now
        self.probed: dict[str, Any] = {}
        self.probed_at = 0.0

    def devices(self) -> list[dict[str, Any]]:
        from workers.probe import probe_in_child

        if time.monotonic() - self.probed_at >= DEVICE_PROBE_SECONDS or not self.probed_at:
            self.probed, self.probed_at = probe_in_child(), time.monotonic()
        return list(self.probed.get("devices", []))

    def report_once(self) -> None:
        # The heartbeat first: a slow listing of the cache's models never makes a live worker look gone.
        drained = write_report(self.name, self.queues, static_report(self.probed), self.devices())
        self.apply_drain(drained)
        listed_at = timezone.now()
        write_parts(self.name, report_parts(), listed_at)

    def consumed(self, queues: list[str]) -> set[str] | None:
        """Which of `queues` the worker consumes now (None before its consumer has started). Read each time: a
        drained worker that refused a run stopped consuming without this thread."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is None:
            return None
        return {queue for queue in queues if task_consumer.consuming_from(queue)}

    def apply_drain(self, drained: bool) -> None:
        """Stop (or resume) consuming the queues that bring runs; the default queue keeps its periodic jobs."""
        run_queues = worker_run_queues(self.name, self.queues)
        consumed = self.consumed(run_queues)
        if consumed is None:
            return
        if drained and consumed:
            stop_consuming(self.app, self.name, sorted(consumed))
            log.info("worker %s drained: takes no new run", self.name)
        elif not drained and (missing := [queue for queue in run_queues if queue not in consumed]):
            resume_consuming(self.app, self.name, missing)
            log.info("worker %s undrained", self.name)

    def loop(self) -> None:
        every = float(settings.MTM_WORKER_REPORT_SECONDS)
        try:
            while True:
                try:
                    self.report_once()
                except Exception:  # a locked or unreachable database: the next report tries again
                    log.warning("worker report failed", exc_info=True)
                if _stop.wait(every):
                    break
        finally:
            connection.close()


@worker_ready.connect
def _start_reporting(sender: Any = None, **_: Any) -> None:
    consumer = sender
    name = consumer.hostname
    queues = sorted(consumer.app.amqp.queues.consume_from or consumer.app.amqp.queues)
    reporter = Reporter(consumer.app, name, queues, consumer)
    _stop.clear()
    threading.Thread(target=reporter.loop, name="mtm-worker-report", daemon=True).start()


@worker_shutdown.connect
def _stop_reporting(sender: Any = None, **_: Any) -> None:
    _stop.set()
    try:
        mark_stopped(getattr(sender, "hostname", "") or "")
    except Exception:
        log.warning("could not record the worker's stop", exc_info=True)
    finally:
        connection.close()
