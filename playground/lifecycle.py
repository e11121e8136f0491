"""A generation's states, written by the worker that generates it and by the reaper (no Celery in here):
queued → running → succeeded | failed. Every end is written once, by a conditional update, so a late worker never
overwrites the reaper's verdict or the reverse."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from mtm.heartbeats import beating
from mtm.shared.problems import Problem
from playground import turns
from playground.models import LIVE_GENERATION, SEND_RECORD_HOURS, Generation, GenerationStatus, PlaygroundSend


def claim(generation_id: int, worker_name: str, passed_over: Sequence[int] = ()) -> bool:
    """The worker takes a queued generation; False when it is no longer queued (reaped, or taken already). The
    conditional update is the claim: of two workers updating the same row, one changes it and the other none. The
    queued answers in `passed_over` (ahead of it in the turn order) count one pass-over each."""
    now = timezone.now()
    with transaction.atomic():
        taken = Generation.objects.filter(pk=generation_id, status=GenerationStatus.QUEUED).update(
            status=GenerationStatus.RUNNING, started_at=now, heartbeat_at=now, worker_name=worker_name[:255]
        )
        if taken:
            PlaygroundSend.objects.filter(generation_id=generation_id).update(served_at=now)
            Generation.objects.filter(pk__in=list(passed_over), status=GenerationStatus.QUEUED).update(
                passed_over=F("passed_over") + 1
            )
    return bool(taken)


def claim_next(worker_name: str, attempts: int = 50) -> int | None:
    """Take the queued generation this worker should answer next (playground.turns); None when none is waiting.
    Another worker taking the same one first only sends this one to the next choice."""
    for _ in range(attempts):
        choice = turns.next_for(worker_name)
        if choice is None:
            return None
        if claim(choice.pk, worker_name, choice.passed_over):
            return choice.pk
    return None


def charge_load(generation_id: int) -> None:
    """Record that answering this generation needed a model load, against its member (the record outlives the
    conversation, so deleting it does not undo the charge)."""
    PlaygroundSend.objects.filter(generation_id=generation_id).update(caused_load=True)


def update_running(generation_id: int, **fields: Any) -> bool:
    """Write progress of a running generation; False when it has ended meanwhile (the reaper failed it)."""
    fields.setdefault("heartbeat_at", timezone.now())
    return bool(Generation.objects.filter(pk=generation_id, status=GenerationStatus.RUNNING).update(**fields))


def succeed(generation_id: int, **fields: Any) -> bool:
    now = timezone.now()
    fields.update(status=GenerationStatus.SUCCEEDED, finished_at=now, heartbeat_at=now)
    return bool(Generation.objects.filter(pk=generation_id, status=GenerationStatus.RUNNING).update(**fields))


def fail(generation_id: int, problem: Problem) -> bool:
    """End a live generation with `problem`; False when it had already ended."""
    now = timezone.now()
    return bool(
        Generation.objects.filter(pk=generation_id, status__in=LIVE_GENERATION).update(
            status=GenerationStatus.FAILED,
            error_code=problem.code[:64],
            error_message=problem.message,
            error_hint=problem.hint,
            finished_at=now,
            heartbeat_at=now,
        )
    )


def heartbeat(generation_id: int, every: float | None = None) -> contextlib.AbstractContextManager[None]:
    """Beat for a running generation from a thread while the block runs (loading a model may take minutes)."""

    def beat() -> None:
        Generation.objects.filter(pk=generation_id, status=GenerationStatus.RUNNING).update(heartbeat_at=timezone.now())

    return beating(beat, f"generation-heartbeat-{generation_id}", every)


WORKER_LOST = Problem(
    "worker_lost",
    "The playground worker stopped answering while it generated this reply (it was stopped, killed or lost).",
    "Send the message again: another playground worker (or this one, restarted) takes it. If it happens again, "
    "look at the worker's log for an out-of-memory kill.",
)


def no_worker_took_it(seconds: int) -> Problem:
    return Problem(
        "no_worker",
        f"No playground worker took this message within {seconds} s.",
        "Check the GPUs page for a live playground worker (queue 'inference'); start one with "
        "`python manage.py runworker --inference --cpu` (or --gpus 0), then send the message again.",
    )


def reap_lost_generations() -> list[int]:
    """Fail running generations whose worker stopped beating (or is recorded as stopped) and queued ones no worker
    took in time, and forget sends older than SEND_RECORD_HOURS. Called by the periodic task; returns the ids it
    failed."""
    from workers.models import Worker

    now = timezone.now()
    stale = now - timedelta(seconds=settings.MTM_PLAYGROUND_HEARTBEAT_TIMEOUT)
    stopped = Worker.objects.filter(stopped_at__isnull=False).values_list("name", flat=True)
    lost = Generation.objects.filter(status=GenerationStatus.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True) | Q(worker_name__in=list(stopped))
    )
    failed = [pk for pk in lost.values_list("pk", flat=True) if fail(pk, WORKER_LOST)]
    waited = now - timedelta(seconds=settings.MTM_PLAYGROUND_QUEUE_TIMEOUT)
    problem = no_worker_took_it(settings.MTM_PLAYGROUND_QUEUE_TIMEOUT)
    for pk in Generation.objects.filter(status=GenerationStatus.QUEUED, created_at__lt=waited).values_list(
        "pk", flat=True
    ):
        if fail(pk, problem):
            failed.append(pk)
    PlaygroundSend.objects.filter(sent_at__lt=now - timedelta(hours=SEND_RECORD_HOURS)).delete()
    return failed
