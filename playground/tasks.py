"""Celery tasks: a playground message on an inference worker (queue `inference`), and the periodic reaper."""

from __future__ import annotations

import logging

from celery import shared_task

from mtm.shared.problems import Problem
from playground import lifecycle

log = logging.getLogger(__name__)


@shared_task(name="playground.generate", bind=True, ignore_result=True)
def generate(self, generation_id: int) -> None:
    """Answer one queued message, loading its model unless it is still loaded and streaming into its row. Every send
    queues one of these; each takes the waiting answer playground.turns picks when it starts (members in turn, answers
    for the model already loaded ahead of ones that need a load), which need not be `generation_id`: as many tasks as answers are queued, so every answer is taken by one."""
    from playground.engine import run_generation

    worker = self.request.hostname or ""
    answer_id = lifecycle.claim_next(worker)
    if answer_id is None:
        return  # every waiting answer was taken (or deleted) already
    try:
        with lifecycle.heartbeat(answer_id):
            run_generation(answer_id, worker)
    except Exception as exc:  # anything the engine did not turn into a clear failure
        log.exception("playground generation %s", answer_id)
        lifecycle.fail(
            answer_id,
            Problem("generation_failed", f"{type(exc).__name__}: {exc}"[:4000], "See the worker's log; send it again."),
        )


@shared_task(name="playground.reap_lost_generations", ignore_result=True)
def reap_lost_generations() -> list[int]:
    """Fail generations whose worker was lost, or that no worker took in time; scheduled by Celery beat."""
    return lifecycle.reap_lost_generations()
