"""Heartbeats and the reaper: a run whose worker died (SIGKILL, a lost machine) is failed within a bounded time.

Every task beats while it works on a run (a thread updates heartbeat_at every MTM_HEARTBEAT_SECONDS). The
reaper fails live runs whose beat is older than MTM_HEARTBEAT_TIMEOUT. It is one periodic job: the task
`projects.reap_stale_runs`, which Celery beat sends every MTM_REAP_SECONDS; `manage.py reap_runs` runs it once.
Reading a run never writes to it.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from mtm.heartbeats import beating
from projects.models import RunStage, RunStatus, TrainingRun

log = logging.getLogger(__name__)

STAGE_OF = {status: RunStage(status.worker_stage) for status in RunStatus if status.worker_stage}


def beat(run_id: int) -> None:
    TrainingRun.objects.filter(pk=run_id).update(heartbeat_at=timezone.now())


def heartbeat(run_id: int, every: float | None = None) -> contextlib.AbstractContextManager[None]:
    """Beat for `run_id` now and until the block ends, from a thread (the block may wait on a child process)."""
    beat(run_id)
    return beating(partial(beat, run_id), f"heartbeat-{run_id}", every)


def reap_stale_runs() -> list[int]:
    """Fail every live run whose worker has stopped beating. Returns the ids it failed."""
    timeout = settings.MTM_HEARTBEAT_TIMEOUT
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale = TrainingRun.objects.filter(status__in=list(STAGE_OF)).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    reaped = []
    for run in stale.only("pk", "status", "heartbeat_at", "last_checkpoint", "worker_host"):
        checkpoint = run.last_checkpoint
        hint = (
            f"Start the run again with Resume: it continues from the latest checkpoint ({checkpoint})."
            if checkpoint
            else "Start the run again; no checkpoint had been saved yet."
        )
        # Conditional on the beat we saw, so a worker that beats again at this instant is left alone.
        updated = TrainingRun.objects.filter(pk=run.pk, status=run.status, heartbeat_at=run.heartbeat_at).update(
            status=RunStatus.FAILED,
            stage_failed=STAGE_OF[RunStatus(run.status)],
            error_code="worker_lost",
            error_message=(
                f"Worker lost: the worker running this run ({run.worker_host or 'unknown'}) stopped "
                f"answering (no heartbeat for over {timeout}s). It was probably killed or its machine "
                "restarted."
            ),
            error_hint=hint,
            finished_at=timezone.now(),
        )
        if updated:
            reaped.append(run.pk)
            log.warning("run %s failed: worker lost", run.pk)
    return reaped
