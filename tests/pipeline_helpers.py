"""Helpers for tests that drive training runs through a real Celery worker."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from projects.models import RunStatus, TrainingProject, TrainingRun

FAST_HYPERPARAMETERS = {
    "max_steps": 12,
    "learning_rate": 0.01,
    "batch_size": 4,
    "max_seq_length": 64,
    "logging_steps": 1,
    "save_steps": 4,
    "precision": "fp32",
}

QA_ROWS = [
    {"prompt": "Question: what is two plus two? Answer:", "completion": " four."},
    {"prompt": "Say hello:", "completion": " Hello world!"},
    {"prompt": "Finish: the quick brown fox", "completion": " jumps over the lazy dog."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def wait_for_end(run_id: int, timeout: float = 300, until=None) -> TrainingRun:
    """Poll the row until `until(run)` holds (default: the run has ended) or the run ends anyway. Fails with the
    row's state on timeout."""
    deadline = time.monotonic() + timeout
    run = TrainingRun.objects.get(pk=run_id)
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.has_ended or (until is not None and until(run)):
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout}s; log:\n{run.log_tail[-3000:]}")


def age_heartbeat(run_id: int) -> None:
    """Date the run's last heartbeat one second beyond MTM_HEARTBEAT_TIMEOUT ago, as a worker that died that long ago
    leaves it: a reaper test controls the time instead of waiting it out. Only once nothing beats for the run any
    more (its worker killed: CeleryWorker.kill returns when every process of the worker is gone)."""
    aged = timezone.now() - timedelta(seconds=settings.MTM_HEARTBEAT_TIMEOUT + 1)
    assert TrainingRun.objects.filter(pk=run_id).update(heartbeat_at=aged) == 1


def start(project, user, *, resume: bool = False):
    """Start a run as `user` would from the command line, through the one service every channel uses."""
    from mtm.audit import Actor, Channel
    from projects.runs.services import start_run

    return start_run(project, actor=Actor(user, Channel.CLI), resume=resume)


def copy_dataset_as_resolve_does(run) -> None:
    """What the resolve stage leaves for a run made by hand in "resolving": its copies of the dataset (and eval file)
    in the run's work folder, and their digests on the run."""
    from projects.runs import dataset_snapshot, records
    from projects.runs.config import run_config

    work = records.work_folder(run.pk)
    config = run_config(run)
    config.dataset_sha256 = dataset_snapshot.snapshot_sha256(dataset_snapshot.snapshot_dataset(run, work))
    if (eval_copy := dataset_snapshot.snapshot_eval_dataset(run, work)) is not None:
        config.eval_dataset_sha256 = dataset_snapshot.snapshot_sha256(eval_copy)
    TrainingRun.objects.filter(pk=run.pk).update(config=config.model_dump())


def cancel(run, user):
    from mtm.audit import Actor, Channel
    from projects.runs.services import cancel_run

    return cancel_run(run, actor=Actor(user, Channel.CLI))


def cancel_once_trained(run, user, steps: int):
    """Cancel `run` once it has trained `steps` steps; it must end cancelled at a checkpoint. Returns its row."""
    from projects.runs.state_machine import CancelOutcome

    wait_for_end(run.pk, until=lambda r: (r.progress or {}).get("step", 0) >= steps)
    run.refresh_from_db()
    assert cancel(run, user) is CancelOutcome.REQUESTED
    run = wait_for_end(run.pk)
    assert run.status == RunStatus.CANCELLED, (run.error_message, run.log_tail[-2000:])
    return run


def wait_until_a_worker_reports(model_name: str, timeout: float = 60) -> None:
    """Wait for a worker's report that lists `model_name`. A test that then changes the model has until the next
    report (MTM_WORKER_REPORT_SECONDS) before placement sees the change: Start places the run on that worker and
    the worker's own resolve meets the change."""
    from workers.models import Worker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(model_name in (w.held_models or []) for w in Worker.objects.all()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no worker reported holding {model_name} within {timeout:.0f} s")


def make_project(portal, model_name, *, method="full", rows=None, hyper=None, name="p", output=None, **extra):
    """A project of the `portal` fixture's member: `rows` (QA_ROWS unless given) eight times over as its dataset,
    FAST_HYPERPARAMETERS updated with `hyper`, its output directory `output` or under the portal's outputs/."""
    root = portal["root"]
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", (rows or QA_ROWS) * 8)
    return TrainingProject.objects.create(
        name=name,
        owner=portal["user"],
        model_name=model_name,
        dataset_path=str(dataset),
        output_directory=str(output or root / "outputs" / name),
        method=method,
        hyperparameters={**FAST_HYPERPARAMETERS, **(hyper or {})},
        **extra,
    )
