"""Placement: a run goes to a worker that holds its model (two workers, two HF caches, one machine); a model no worker
holds, or a run too big for every device, is refused at Start with the reason, the estimate and remedies."""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from django.contrib.auth.models import User

from models_registry.demo import install_into_cache
from models_registry.models import PortalSettings
from projects.models import RunStatus, TrainingProject
from projects.runs.services import RunRefused
from projects.services import check_project
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, cancel, start, wait_for_end, write_jsonl
from tests.workers import CeleryWorker
from workers.models import Device, Worker
from workers.queues import own_queue

MODEL = "test-org/tiny-llama"


def make_project(root, owner, name, model=MODEL, hyper=None, method="full"):
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", QA_ROWS * 4)
    return TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name=model,
        dataset_path=str(dataset),
        method=method,
        output_directory=str(root / "outputs" / name),
        hyperparameters={**FAST_HYPERPARAMETERS, "max_steps": 2, **(hyper or {})},
    )


@pytest.mark.database
@pytest.mark.slow
def test_the_run_goes_to_the_worker_whose_cache_holds_the_model(
    portal_roots, transactional_db, tiny_llama_dir, celery_broker, tmp_path
):
    row = PortalSettings.load()
    row.model_cache_path = ""  # each worker uses its own cache (HF_HUB_CACHE), as on separate hosts
    row.save()
    with_model, without = tmp_path / "cache-a" / "hub", tmp_path / "cache-b" / "hub"
    without.mkdir(parents=True)
    install_into_cache(tiny_llama_dir, with_model, MODEL)
    names = {f"holder-{uuid.uuid4().hex[:6]}": with_model, f"empty-{uuid.uuid4().hex[:6]}": without}
    workers = []
    try:
        for name, cache in names.items():
            argv = [sys.executable, "manage.py", "runworker", "--cpu", "--name", name]
            env = {"HF_HUB_CACHE": str(cache), "MTM_WORKER_REPORT_SECONDS": "1"}
            workers.append(CeleryWorker(celery_broker, tmp_path / f"{name}.log", "", env, argv).wait_ready())

        # Wait for these two workers' own reports: a worker another test left reporting may hold models too.
        def reported(prefix):
            return Worker.objects.filter(name__startswith=prefix, held_models__isnull=False).exists()

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(reported(prefix) for prefix in names):
            time.sleep(0.3)
        holder, empty = (Worker.objects.get(name__startswith=prefix) for prefix in names)
        assert holder.held_models == [MODEL] and empty.held_models == []

        owner = User.objects.create_user("member")
        # The web host (this process) has no copy: a model a worker holds is still accepted on save, naming it.
        data = {"name": "p", "model_name": MODEL, "method": "full", "hyperparameters": {}}
        data |= {"dataset_path": str(write_jsonl(portal_roots / "datasets" / "p.jsonl", QA_ROWS))}
        data |= {"output_directory": str(portal_roots / "outputs" / "p")}
        check = check_project(data, user=owner)
        assert not check.errors.get("model_name")
        assert [w.code for w in check.warnings["model_name"]] == ["model_on_workers"]
        assert holder.name in check.warnings["model_name"][0].message
        absent = check_project({**data, "model_name": "test-org/absent"}, user=owner)
        assert [p.code for p in absent.errors["model_name"]] == ["model_not_found"]

        run = start(make_project(portal_roots, owner, "placed"), owner)
        assert run.placement.queue == own_queue(holder.name)
        # The holder resolved the model in its own cache; what training does next is the pipeline tests' subject.
        run = wait_for_end(run.pk, timeout=240, until=lambda r: bool(r.resolved_path))
        assert run.placement.worker_name == holder.name and run.resolved_path.startswith(str(with_model))
        cancel(run, owner)
        assert wait_for_end(run.pk, timeout=120).status == RunStatus.CANCELLED

        with pytest.raises(RunRefused) as refused:
            start(make_project(portal_roots, owner, "absent", model="test-org/absent"), owner)
        problem = refused.value.problem
        assert problem.code == "model_not_found"
        assert problem.message.startswith("Model 'test-org/absent' not found. Please ensure the model is downloaded")
        assert holder.name in problem.message and empty.name in problem.message
        assert not TrainingProject.objects.get(name="absent").runs.exists()  # nothing was queued
    finally:
        for worker in workers:
            worker.stop()


def test_a_run_too_big_for_every_device_is_refused_with_its_estimate_and_remedies(
    portal_roots, db, tiny_llama_in_cache
):
    # Two GPU workers as they report themselves (this machine has no GPU): 1 GiB devices, smaller than the CUDA
    # context allowance alone.
    for index, name in enumerate(("small0@gpu-host", "small1@gpu-host")):
        worker = Worker.objects.create(
            name=name, host="gpu-host", queues=[own_queue(name), "training", "gpus1.4g"], held_models=[MODEL]
        )
        Device.objects.create(worker=worker, index=0, name=f"Tiny GPU {index}", total_bytes=1024**3, bf16=True)
    owner = User.objects.create_user("member")
    project = make_project(portal_roots, owner, "big", hyper={"batch_size": 64, "max_seq_length": 2048})
    with pytest.raises(RunRefused) as refused:
        start(project, owner)
    problem = refused.value.problem
    assert problem.code == "does_not_fit"
    assert (
        "This run needs about" in problem.message
        and "the largest device of the live workers is Tiny GPU" in problem.message
    )
    assert "Train with LoRA" in problem.hint and "Turn on gradient checkpointing" in problem.hint
    assert "batch_size 32 with gradient_accumulation_steps 2" in problem.hint
    assert not project.runs.exists()


def test_the_project_form_shows_the_estimate_where_it_fits_and_remedies_when_it_fits_nowhere(
    portal_roots, db, tiny_llama_in_cache
):
    from tests.clients import secure_client

    small = Worker.objects.create(name="small@gpu-host", host="gpu-host", queues=["training"], held_models=[MODEL])
    Device.objects.create(worker=small, index=0, name="Tiny GPU", total_bytes=1024**3, bf16=True)
    client = secure_client(User.objects.create_user("member"))
    assert 'hx-get="/gpus/estimate/"' in client.get("/projects/new/").content.decode()

    big = {"model_name": MODEL, "method": "full", "batch_size": "64", "max_seq_length": "2048"}
    page = client.get("/gpus/estimate/", big).content.decode()
    assert "Peak memory: about" in page and "Optimizer states (AdamW)" in page
    assert "Fits no live device" in page and "Tiny GPU" in page
    assert "Train with LoRA (r=16, all-linear):" in page and "Turn on gradient checkpointing:" in page

    assert "Workers holding the model: <code>small@gpu-host</code>." in page

    roomy = Worker.objects.create(name="roomy@gpu-host", host="gpu-host", queues=["training"], held_models=[MODEL])
    Device.objects.create(worker=roomy, index=0, name="Roomy GPU", total_bytes=80 * 1024**3, bf16=True)
    page = client.get("/gpus/estimate/", big).content.decode()
    assert "Fits on: <code>roomy@gpu-host</code> (Roomy GPU, 80.0\xa0GB)" in page and "Fits no live device" not in page

    for params, note in (
        ({"model_name": "not a name", "method": "full"}, "once the base model above is a valid model name"),
        ({"model_name": MODEL, "batch_size": "lots"}, "once the hyperparameters above are valid"),
        ({"model_name": "test-org/absent"}, "once &#x27;test-org/absent&#x27; resolves here"),
    ):
        assert note in client.get("/gpus/estimate/", params).content.decode()


def test_with_no_worker_running_a_run_waits_on_the_shared_queue_saying_so_in_the_page_and_the_api(
    portal_roots, db, tiny_llama_in_cache
):
    from django.test import Client

    from tests.api_client import call, make_user_token

    owner, token = make_user_token("member")
    first = start(make_project(portal_roots, owner, "first"), owner)
    second = start(make_project(portal_roots, owner, "second"), owner)
    assert (second.placement.queue, second.placement.waiting_for) == (
        "training",
        "a training worker (none is running now)",
    )
    body = call(Client(), "GET", f"/runs/{second.pk}", token=token).json()
    assert body["status"] == "queued"
    assert (
        body["waiting"]
        == f"waiting for a training worker (none is running now): 2nd in line, behind run #{first.pk} (member)"
    )
    assert call(Client(), "GET", f"/runs/{first.pk}", token=token).json()["waiting"].endswith(": no run ahead")
