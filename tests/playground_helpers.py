"""Helpers for the playground tests: a real inference worker (`manage.py runworker --cpu --inference`), waiting for
it to report, and waiting for a generation to end."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from tests.workers import CeleryWorker

# Report every second: a test's flush removes the worker's row, and the next report must come back quickly.
INFERENCE_ENV = {"MTM_WORKER_REPORT_SECONDS": "1", "MTM_HEARTBEAT_SECONDS": "1", "MTM_PLAYGROUND_IDLE_SECONDS": "120"}


def inference_worker(redis_url: str, log_path: Path, extra_env: dict[str, str] | None = None) -> CeleryWorker:
    name = f"playground-test-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "manage.py", "runworker", "--cpu", "--inference", "--name", name]
    worker = CeleryWorker(redis_url, log_path, "", {**INFERENCE_ENV, **(extra_env or {})}, argv)
    worker.name = f"{name}@"  # the host is appended by runworker
    return worker


def wait_for_inference_worker(timeout: float = 90) -> None:
    """Until a live worker consuming the inference queue has reported (tests flush the table between them)."""
    from playground.services import Refused, _a_worker_listens

    deadline = time.monotonic() + timeout
    while True:
        try:
            _a_worker_listens()
            return
        except Refused:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for_generation(generation_id: int, timeout: float = 120, until=None):
    from playground.models import Generation

    deadline = time.monotonic() + timeout
    generation = Generation.objects.get(pk=generation_id)
    while time.monotonic() < deadline:
        generation.refresh_from_db()
        if not generation.is_live or (until is not None and until(generation)):
            return generation
        time.sleep(0.1)
    raise AssertionError(f"generation {generation_id} still {generation.status} after {timeout}s")
