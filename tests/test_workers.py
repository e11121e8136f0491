"""Training workers started with `manage.py runworker`: what they report, the GPUs page, drain and undrain, and a
worker that stops shown as gone. Real worker processes; on this machine they are CPU workers (no GPU)."""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from mtm.models import AuditEvent
from projects.models import RunStatus, TrainingProject
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, start, wait_for_end, write_jsonl
from tests.workers import CeleryWorker
from workers.models import Worker
from workers.queues import INFERENCE_QUEUE, capacity_queues, own_queue, tier_for, worker_queues

REPORTING = {"MTM_WORKER_REPORT_SECONDS": "1", "MTM_HEARTBEAT_SECONDS": "1"}


def wait_until(condition, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.3)
    raise AssertionError(f"not after {timeout}s: {what}")


@pytest.fixture
def runworker(celery_broker, tmp_path):
    started = []

    def launch(*args: str, extra_env: dict[str, str] | None = None) -> CeleryWorker:
        argv = [sys.executable, "manage.py", "runworker", *args]
        worker = CeleryWorker(
            celery_broker, tmp_path / f"runworker-{len(started)}.log", "", {**REPORTING, **(extra_env or {})}, argv
        )
        started.append(worker)
        return worker

    yield launch
    for worker in started:
        worker.stop()


def test_queues_follow_devices_and_memory():
    assert capacity_queues(0, 0) == ["cpu"]
    assert capacity_queues(1, 24 * 1024**3) == ["gpus1.4g", "gpus1.8g", "gpus1.12g", "gpus1.16g", "gpus1.24g"]
    assert capacity_queues(2, 80 * 1024**3)[-1] == "gpus2.80g"
    assert tier_for(38 * 1024**3) == 40 and tier_for(500 * 1024**3) is None
    assert worker_queues("gpu0@h", 0, 0) == [own_queue("gpu0@h"), "training", "cpu"]


def test_runworker_refuses_bad_or_missing_devices(db):
    with pytest.raises(CommandError, match="give device indexes separated by commas"):
        call_command("runworker", gpus="0,x")
    with pytest.raises(CommandError, match="names a device twice"):
        call_command("runworker", gpus="1,1")
    # This machine has no GPU: a worker asked to own GPU 0 is refused before it starts, not started blind.
    with pytest.raises(CommandError, match=r"--gpus 0: this worker would see 0 CUDA device\(s\)"):
        call_command("runworker", gpus="0")


@pytest.mark.database
@pytest.mark.slow
def test_a_worker_reports_drains_undrains_and_is_gone_when_stopped(
    portal_roots, transactional_db, tiny_llama_in_cache, runworker
):
    name = f"alpha-{uuid.uuid4().hex[:6]}"
    worker = runworker("--cpu", "--name", name, "--also", "default").wait_ready()
    # Its heartbeat is written first, its cache and models once listed: wait for the whole report.
    row = wait_until(
        lambda: Worker.objects.filter(name__startswith=name + "@", held_models_at__isnull=False).first(),
        "the worker's report",
    )
    assert "concurrency: 1 (prefork)" in worker.log_text()  # one run at a time
    assert row.queues == sorted([own_queue(row.name), "training", "cpu", "default"])
    assert row.cuda_visible_devices == "" and not row.devices.exists()  # a CPU worker reports no device
    assert row.cpu_threads >= 1 and row.ram_bytes > 0 and not row.is_gone
    assert row.versions["torch"] and row.versions["transformers"] and row.versions["python"]
    assert str(portal_roots / "hf-cache" / "hub") in row.hf_cache
    seen = row.last_seen
    wait_until(lambda: Worker.objects.get(pk=row.pk).last_seen > seen, "a second report")  # it keeps reporting

    # A second worker under the same name is refused while the first is alive.
    with pytest.raises(CommandError, match="is already running"):
        call_command("runworker", cpu=True, name=row.name)

    member = User.objects.create_user("member")
    staff = User.objects.create_user("boss", is_staff=True)
    page = secure_client(member).get("/gpus/").content.decode()
    assert row.name in page and "CPU only" in page and "free" in page and "Drain" not in page
    refused = secure_client(member, raise_request_exception=False).post(
        f"/gpus/workers/{row.pk}/drain/", {"drained": "1"}
    )
    assert refused.status_code == 403 and not Worker.objects.get(pk=row.pk).drained
    assert secure_client(staff).post(f"/gpus/workers/{row.pk}/drain/", {"drained": "1"}).status_code == 302
    assert AuditEvent.objects.filter(action="worker.drain", actor=staff, object_id=str(row.pk)).exists()
    wait_until(lambda: "drained: takes no new run" in worker.log_text(), "the worker applying the drain")

    dataset = write_jsonl(portal_roots / "datasets" / "w.jsonl", QA_ROWS * 4)
    project = TrainingProject.objects.create(
        name="w",
        owner=member,
        model_name=tiny_llama_in_cache[0],
        dataset_path=str(dataset),
        method="full",
        output_directory=str(portal_roots / "outputs" / "w"),
        hyperparameters={**FAST_HYPERPARAMETERS, "max_steps": 2},
    )
    run = start(project, member)
    time.sleep(3)  # a drained worker has several chances to take the run; none is taken
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    page = secure_client(member).get("/gpus/").content.decode()
    assert (
        "drained" in page
        and f"Run #{run.pk}</a> of w (member): waiting for a free training worker: no run ahead" in page
    )

    assert secure_client(staff).post(f"/gpus/workers/{row.pk}/drain/", {"drained": "0"}).status_code == 302
    assert AuditEvent.objects.filter(action="worker.undrain", actor=staff).exists()
    assert wait_for_end(run.pk, timeout=240).status == RunStatus.SUCCEEDED
    assert run.placement.worker_name == row.name

    worker.stop()
    row.refresh_from_db()
    assert row.is_gone
    assert "gone" in secure_client(member).get("/gpus/").content.decode()


def test_the_gpus_page_shows_recently_gone_workers_as_gone_and_folds_away_the_long_gone(db, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.MTM_WORKER_FORGET_SECONDS = 3600
    now = timezone.now()
    Worker.objects.create(name="live@h1", host="h1", queues=["training"], last_seen=now)
    Worker.objects.create(name="stopped@h1", host="h1", queues=["training"], last_seen=now, stopped_at=now)
    Worker.objects.create(name="silent@h1", host="h1", queues=["training"], last_seen=now - timedelta(minutes=10))
    Worker.objects.create(name="old@h2", host="h2", queues=["training"], last_seen=now - timedelta(hours=2))
    Worker.objects.create(
        name="ancient@h2", host="h2", queues=["training"], last_seen=now - timedelta(days=30), stopped_at=now
    )
    page = secure_client(User.objects.create_user("member")).get("/gpus/").content.decode()
    listed = page.split('class="card gone-workers"')[0]
    for name in ("live@h1", "stopped@h1", "silent@h1"):
        assert f'data-worker="{name}"' in listed
    assert listed.count('<span class="badge badge-muted">gone</span>') == 2  # stopped, and silent for 10 minutes
    assert "old@h2" not in listed and "ancient@h2" not in listed and "<h2>h2</h2>" not in listed
    folded = page.split('class="card gone-workers"')[1].split("</details>")[0]
    assert "2 workers gone for more than 1 h, not listed above" in folded
    assert folded.index("old@h2") < folded.index("ancient@h2")  # most recently seen first


def test_a_workers_report_carries_the_registrys_part(portal_roots, db, tiny_llama_in_cache):
    """models_registry adds the HF cache and the models it holds to every report (workers.reporting.register_part in
    its AppConfig.ready()): the fleet layer imports nothing above it."""
    from django.utils import timezone

    from workers.reporting import report_parts, static_report, write_parts, write_report

    write_report("alpha@h1", ["training"], static_report({}), [])
    write_parts("alpha@h1", report_parts(), timezone.now())
    row = Worker.objects.get(name="alpha@h1")
    assert str(portal_roots / "hf-cache" / "hub") in row.hf_cache
    assert row.held_models == [tiny_llama_in_cache[0]]


def test_playground_models_count_against_their_device_on_the_gpus_page_and_in_placement(
    portal_roots, db, tiny_llama_in_cache
):
    """The playground registers what it holds in workers.holds (its AppConfig.ready()); scheduling and the GPUs page
    read it there. A model loaded by an inference worker on the same physical device takes room from the trainer."""
    from django.utils import timezone

    from playground.models import LoadedModel
    from projects.runs.scheduling.fit import fits_for
    from workers.models import Device

    gib = 1024**3
    now = timezone.now()
    trainer = Worker.objects.create(
        name="train@h1", host="h1", queues=["training"], cuda_visible_devices="3", last_seen=now
    )
    Device.objects.create(worker=trainer, index=0, name="Big GPU", total_bytes=80 * gib, bf16=True)
    Worker.objects.create(
        name="play@h1", host="h1", queues=[INFERENCE_QUEUE], cuda_visible_devices="2,3", last_seen=now
    )
    LoadedModel.objects.create(
        worker_name="play@h1", key="k", label="team/bot", device="cuda:1", device_index=1, bytes=30 * gib
    )
    owner = User.objects.create_user("member")
    project = TrainingProject.objects.create(
        name="p",
        owner=owner,
        model_name=tiny_llama_in_cache[0],
        dataset_path=str(portal_roots / "datasets" / "d.jsonl"),
        method="full",
        output_directory=str(portal_roots / "outputs" / "p"),
        hyperparameters=FAST_HYPERPARAMETERS,
    )
    [fit] = fits_for(project, None, [trainer])
    assert fit.room_bytes == 50 * gib  # physical device 3 on h1: the trainer's cuda:0, the playground's cuda:1
    page = secure_client(owner).get("/gpus/").content.decode()
    assert "playground: team/bot holds 30.0\xa0GB" in page
    assert "team/bot loaded on cuda:1" in page
