"""Nothing a member sets off holds up the periodic jobs: transformers' checks of a model go to the `checks` queue,
token counts to `counts`, each with a worker of its own, and `default` carries only the periodic jobs (the reapers,
upload cleanup) on a worker nothing else reaches. Real workers started as `runportal` starts them, real Redis, real
Celery beat, and a planted model whose check holds the checks worker until the test lets it go."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from models_registry.deep_state import ask_worker
from models_registry.deep_verdict import fingerprint, folder_key
from models_registry.demo import install_into_cache
from models_registry.models import ModelVerdict
from mtm.celery import app
from mtm.management.commands.runportal import side_workers
from projects.models import RunStatus, TokenCount, TrainingProject, TrainingRun
from tests.clients import secure_client
from tests.pipeline_helpers import QA_ROWS, write_jsonl
from tests.token_counts import HX
from tests.workers import CeleryBeat, CeleryWorker

CHECK_TASK = "models_registry.check_model_deep"
FILL_TASK = "models_registry.fill_verdicts"
COUNT_TASK = "projects.count_dataset_tokens"
REAP_TASK = "projects.reap_stale_runs"

# A model's own configuration code (trusted, so the check runs it) that waits on a FIFO before it builds the config:
# the check holds its worker until the test writes to the other end.
HELD_CONFIG = """
import os

from transformers import LlamaConfig


class HeldConfig(LlamaConfig):
    model_type = "mtm_held"

    def __init__(self, **kwargs):
        if not os.environ.get("MTM_GATE_PASSED"):  # once per check process
            with open({gate!r}) as gate:
                gate.read()
            os.environ["MTM_GATE_PASSED"] = "1"
        super().__init__(**kwargs)
"""


def queue_of(task: str) -> str:
    return app.amqp.router.route({}, task)["queue"].name


def ran_tasks(worker: CeleryWorker) -> set[str]:
    """The tasks a worker received, from its log ("Task NAME[id] received")."""
    return set(re.findall(r"Task ([\w.]+)\[[^\]]+\] received", worker.log_text()))


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- where the work goes ----------------------------------------------------------------------------------------


def test_only_the_periodic_jobs_go_to_the_default_queue():
    app.loader.import_default_modules()
    periodic = {job["task"] for job in settings.CELERY_BEAT_SCHEDULE.values()}
    ours = [name for name in app.tasks if not name.startswith("celery.")]
    on_default = {name for name in ours if queue_of(name) == settings.CELERY_TASK_DEFAULT_QUEUE}
    assert REAP_TASK in on_default and "playground.reap_lost_generations" in on_default
    assert on_default <= periodic, f"{sorted(on_default - periodic)} would share the periodic jobs' worker"
    assert queue_of(CHECK_TASK) == queue_of(FILL_TASK) == "checks"
    assert queue_of(COUNT_TASK) == "counts"  # not behind a flood of checks


def test_runportal_starts_a_worker_for_each_of_checks_counts_and_the_periodic_jobs():
    queues = {child.name: option(child.argv, "-Q") for child in side_workers()}
    assert queues == {"checks": "checks", "counts": "counts", "periodic": settings.CELERY_TASK_DEFAULT_QUEUE}


# --- a check held on the checks worker --------------------------------------------------------------------------


class Gate:
    """A FIFO a check blocks on: `held()` is true once the check has opened it; `release()` lets the check go on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.writer: int | None = None

    def held(self) -> bool:
        if self.writer is None:
            try:  # a FIFO opens for writing without blocking only while a reader has it open
                self.writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
        return self.writer is not None

    def release(self) -> None:
        if self.writer is not None:
            os.write(self.writer, b"go")
            os.close(self.writer)
            self.writer = None


def wait_until(condition, seconds: float, what: str, *logs: CeleryWorker) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:.0f}s\n" + "\n".join(log.log_text()[-3000:] for log in logs))
        time.sleep(0.2)


def held_model(tmp_path: Path, tiny: Path, hf_cache: Path, gate: Gate) -> Path:
    """The tiny Llama with its own configuration code that waits on `gate`, planted in the HF cache."""
    folder = shutil.copytree(tiny, tmp_path / "held-model")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mtm_held", auto_map={"AutoConfig": "configuration_held.HeldConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_held.py").write_text(HELD_CONFIG.format(gate=str(gate.path)))
    return install_into_cache(folder, hf_cache, "planted/held")


class PortalWorkers:
    """runportal's plain Celery workers (its own command lines, a test's name for each) and Celery beat, sending the
    reaper every second. `for_task(name)`: the worker consuming the queue that task is routed to."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        env = {"MTM_REAP_SECONDS": "1", "HF_MODULES_CACHE": str(tmp_path / "hf-modules")}
        self.by_queue: dict[str, CeleryWorker] = {}
        self.started: list[CeleryWorker] = []
        for child in side_workers():
            argv = list(child.argv)
            argv[argv.index("-n") + 1] = f"{child.name}-{uuid.uuid4().hex[:8]}@%h"
            worker = CeleryWorker(redis_url, tmp_path / f"{child.name}.log", "", env, argv)
            self.started.append(worker)
            self.by_queue.update(dict.fromkeys(option(argv, "-Q").split(","), worker))
        self.started.append(CeleryBeat(redis_url, tmp_path / "beat.log", env))

    def for_task(self, task: str) -> CeleryWorker:
        return self.by_queue[queue_of(task)]


@pytest.fixture
def portal_workers(transactional_db, celery_broker, portal_roots, tmp_path) -> Iterator[PortalWorkers]:
    """PortalWorkers, ready, on the portal `portal_roots` set up; stopped when the test ends."""
    workers = None
    try:
        workers = PortalWorkers(celery_broker, tmp_path)
        for process in workers.started:
            process.wait_ready()
        yield workers
    finally:
        for process in workers.started if workers else []:
            process.stop()


def stale_run(owner: User) -> TrainingRun:
    project = TrainingProject.objects.create(
        name="lost", owner=owner, model_name="org/m", dataset_path="/d", output_directory="/o"
    )
    long_ago = timezone.now() - timedelta(days=1)
    return TrainingRun.objects.create(
        project=project, status=RunStatus.TRAINING, heartbeat_at=long_ago, started_at=long_ago
    )


@pytest.mark.slow
def test_a_check_holding_the_checks_worker_holds_up_neither_the_reaper_nor_a_token_count(
    portal_workers, portal_roots, tiny_llama_in_cache, tiny_llama_dir, hf_cache, tmp_path
):
    gate = Gate(tmp_path / "gate")
    try:
        snapshot = str(held_model(tmp_path, tiny_llama_dir, hf_cache, gate))
        # A member's look at the planted model asks a worker for transformers' verdict, as the pages do.
        assert ask_worker(snapshot, True, "planted/held", fingerprint(snapshot, True))
        wait_until(gate.held, 120, "the check never reached the gate", portal_workers.for_task(CHECK_TASK))

        alice = User.objects.create_user("alice")
        run = stale_run(alice)
        wait_until(
            lambda: TrainingRun.objects.get(pk=run.pk).status == RunStatus.FAILED,
            60,
            "the reaper did not run while a check held the checks worker",
            portal_workers.for_task(REAP_TASK),
        )
        assert TrainingRun.objects.get(pk=run.pk).error_code == "worker_lost"

        dataset = write_jsonl(portal_roots / "datasets" / "long.jsonl", QA_ROWS)
        params = {"dataset_path": str(dataset), "model_name": tiny_llama_in_cache[0], "max_seq_length": "32"}
        assert secure_client(alice).get("/projects/check-dataset/", params, **HX).status_code == 200
        wait_until(
            lambda: TokenCount.objects.get().state != TokenCount.State.PENDING,
            120,
            "the token count waited behind the check",
            portal_workers.for_task(COUNT_TASK),
        )
        assert TokenCount.objects.get().state == TokenCount.State.DONE

        assert gate.held() and not ModelVerdict.objects.filter(folder_key=folder_key(snapshot)).exists()
        gate.release()
        wait_until(
            lambda: ModelVerdict.objects.filter(folder_key=folder_key(snapshot)).exists(),
            120,
            "the check did not finish once released",
            portal_workers.for_task(CHECK_TASK),
        )
    finally:
        gate.release()
    ran = {task: ran_tasks(portal_workers.for_task(task)) for task in (CHECK_TASK, COUNT_TASK, REAP_TASK)}
    assert CHECK_TASK in ran[CHECK_TASK] <= {CHECK_TASK, FILL_TASK} and ran[COUNT_TASK] == {COUNT_TASK}, ran
    assert REAP_TASK in ran[REAP_TASK] <= {job["task"] for job in settings.CELERY_BEAT_SCHEDULE.values()}, ran
