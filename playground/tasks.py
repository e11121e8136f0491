"""Celery tasks: a playground message on an inference worker (queue `inference`), and the periodic reaper."""

from __future__ import annotations

import logging

from celery import shared_task

from mtm.shared.problems import Problem
from playground import lifecycle

log = logging.getLogger(__name__)


@shared_task(name="playground.generate", bind=True, ignore_result=True)
def generate(self, generation_id: int) -> None:
    """Take the queued message, answer it (loading the model unless it is still loaded), streaming into the row."""
    from playground.engine import run_generation

    worker = self.request.hostname or ""
    if not lifecycle.claim(generation_id, worker):
        return  # gone, reaped or taken already
    try:
        with lifecycle.heartbeat(generation_id):
            run_generation(generation_id, worker)
    except Exception as exc:  # anything the engine did not turn into a clear failure
        log.exception("playground generation %s", generation_id)
        lifecycle.fail(
            generation_id,
            Problem("generation_failed", f"{type(exc).__name__}: {exc}"[:4000], "See the worker's log; send it again."),
        )


@shared_task(name="playground.reap_lost_generations", ignore_result=True)
def reap_lost_generations() -> list[int]:
    """Fail generations whose worker was lost, or that no worker took in time; scheduled by Celery beat."""
    return lifecycle.reap_lost_generations()
