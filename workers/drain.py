"""Drain on the worker's side. A drained training worker stops consuming the queues that bring runs (it finishes the
run it holds) and consumes them again once undrained. Its reporting thread brings the consumers in line with the
row at every report; before that, a drained worker that receives a run refuses it
(projects.runs.scheduling.fair_share.take), hands it back to its queue and stops consuming at once, so staff's Drain
holds from the moment it is saved."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from workers.models import Worker
from workers.queues import run_queues

log = logging.getLogger(__name__)
# How long a control command to the worker's own main process waits for its answer (it answers in milliseconds;
# this bounds the wait if the worker is busy elsewhere).
CONTROL_TIMEOUT_SECONDS = 5.0


class WorkerDrained(Exception):
    """The worker that was about to take a run is drained: the run goes back to its queue instead."""

    def __init__(self, worker_name: str):
        super().__init__(f"the worker {worker_name} is drained: it takes no new run")
        self.worker_name = worker_name


def is_drained(worker_name: str, *, lock: bool = False) -> bool:
    """Whether staff drained the worker `worker_name`. `lock`: hold its row until the caller's transaction ends, so
    a Drain saved meanwhile waits for the run being taken and the page's "drained" is true once it says so."""
    if not worker_name:
        return False
    rows = Worker.objects.filter(name=worker_name)
    if lock:
        rows = rows.select_for_update()
    return bool(rows.values_list("drained", flat=True).first())


def worker_run_queues(worker_name: str, queues: list[str]) -> list[str]:
    return run_queues(worker_name, queues, settings.CELERY_TASK_DEFAULT_QUEUE)


def stop_consuming(app: Any, worker_name: str, queues: list[str]) -> None:
    """Ask the worker `worker_name` to stop consuming `queues` (Celery's cancel_consumer), waiting for its answers."""
    for queue in queues:
        app.control.cancel_consumer(queue, destination=[worker_name], reply=True, timeout=CONTROL_TIMEOUT_SECONDS)


def resume_consuming(app: Any, worker_name: str, queues: list[str]) -> None:
    for queue in queues:
        app.control.add_consumer(queue, destination=[worker_name], reply=True, timeout=CONTROL_TIMEOUT_SECONDS)


def stop_taking_runs(app: Any, worker_name: str) -> None:
    """Called by a drained worker that refused a run: it stops consuming the queues that bring runs now, not at its
    next report, so the run handed back goes to another worker."""
    queues = Worker.objects.filter(name=worker_name).values_list("queues", flat=True).first() or []
    try:
        stop_consuming(app, worker_name, worker_run_queues(worker_name, list(queues)))
    except Exception:  # the broker did not answer: the run is handed back all the same, the next report stops it
        log.warning("worker %s could not stop consuming at once", worker_name, exc_info=True)
        return
    log.info("worker %s drained: handed a run back, takes no new run", worker_name)
