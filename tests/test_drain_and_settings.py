"""The GPUs, Settings and run pages: Drain holds from the moment the page says so (a real
worker whose next report is an hour away refuses a run started right after it), Drain is offered only for workers
that take training runs, the upload quota reads and is typed as a size, the live-run limit has its own heading and
the README says where it is, and the run page's Configuration and Device follow the run while it is live."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from models_registry.models import PortalSettings
from mtm.celery import app
from mtm.models import AuditEvent
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.scheduling.placement import HANDED_BACK, hand_back
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, cancel, start, wait_for_end, write_jsonl
from workers.models import Device, RunPlacement, Worker
from workers.queues import INFERENCE_QUEUE, own_queue, worker_queues

GIB = 1024**3
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def wait_until(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not after {timeout}s: {what}")


def a_project(root: Path, owner, model_name: str, name: str = "p") -> TrainingProject:
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", QA_ROWS * 4)
    return TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name=model_name,
        dataset_path=str(dataset),
        method="full",
        output_directory=str(root / "outputs" / name),
        hyperparameters={**FAST_HYPERPARAMETERS, "max_steps": 2000, "save_steps": 1000},
    )


def consumed_queues(worker_name: str) -> list[str]:
    """The queues the worker consumes now, as Celery itself answers."""
    answer = app.control.inspect(destination=[worker_name], timeout=10).active_queues() or {}
    return sorted(queue["name"] for queue in answer.get(worker_name, []))


# --- 1. Drain holds at once ---------------------------------------------------------------------------------------


@pytest.mark.database
@pytest.mark.slow
def test_a_run_started_right_after_drain_is_not_taken_by_the_drained_worker(
    portal_roots, transactional_db, tiny_llama_in_cache, start_worker
):
    staff, member = User.objects.create_user("boss", is_staff=True), User.objects.create_user("member")
    # Its first report is its only one here: the next is an hour away, so its report cannot be what applies the drain.
    drained = start_worker(queues="training", extra_env={"MTM_WORKER_REPORT_SECONDS": "3600"}).wait_ready()
    row = wait_until(
        lambda: Worker.objects.filter(name__startswith=drained.name, held_models__isnull=False).first(),
        "the worker's report",
    )
    assert consumed_queues(row.name) == ["training"]
    assert secure_client(staff).post(f"/gpus/workers/{row.pk}/drain/", {"drained": "1"}).status_code == 302

    run = start(a_project(portal_roots, member, tiny_llama_in_cache[0]), member)
    assert run.placement.queue == "training"  # the queue the drained worker still consumes
    run = wait_for_end(
        run.pk, timeout=60, until=lambda r: r.status != RunStatus.QUEUED or HANDED_BACK in r.placement.waiting_for
    )
    assert run.status == RunStatus.QUEUED and run.worker_host == "" and run.started_at is None
    assert run.placement.worker_name == ""
    assert run.placement.waiting_for == f"a free training worker{HANDED_BACK}{row.name}"
    assert run.placement.queue == "training"
    # The drained worker stopped consuming when it refused the run, not at its next report.
    assert consumed_queues(row.name) == []
    page = secure_client(member).get("/gpus/").content.decode()
    assert f"waiting for a free training worker, handed back by the drained worker {row.name}" in page

    other = start_worker(queues="training").wait_ready()
    run = wait_for_end(run.pk, timeout=120, until=lambda r: r.status != RunStatus.QUEUED)
    assert run.placement.worker_name.startswith(other.name)
    cancel(run, member)
    assert wait_for_end(run.pk).status == RunStatus.CANCELLED


def test_a_run_sent_to_the_drained_worker_by_name_goes_to_a_worker_that_is_not_drained(
    portal_roots, tiny_llama_in_cache
):
    """Only some workers hold the model, so runs are sent by name: one the drained worker refuses is sent again,
    to the other holder's own queue (the drained worker no longer consumes its own)."""
    model = tiny_llama_in_cache[0]
    member = User.objects.create_user("member")
    for name, held in (("a@vm", [model]), ("b@vm", [model]), ("c@vm", [])):
        Worker.objects.create(
            name=name, host="vm", queues=worker_queues(name, 0, 0), held_models=held, ram_bytes=64 * GIB
        )
    run = TrainingRun.objects.create(project=a_project(portal_roots, member, model), started_by=member)
    RunPlacement.objects.create(run=run, queue=own_queue("a@vm"), waiting_for="the worker a@vm")
    Worker.objects.filter(name="a@vm").update(drained=True)

    assert hand_back(run.pk, "a@vm") == own_queue("b@vm")
    placement = RunPlacement.objects.get(run=run)
    assert placement.queue == own_queue("b@vm")
    assert placement.waiting_for == f"the worker b@vm{HANDED_BACK}a@vm"
    # Handed back again (by b, drained meanwhile, say): one note, naming the last.
    Worker.objects.filter(name="b@vm").update(drained=True)
    hand_back(run.pk, "b@vm")
    assert RunPlacement.objects.get(run=run).waiting_for.count(HANDED_BACK) == 1


# --- 2. Drain only where it does something ------------------------------------------------------------------------


@pytest.fixture
def three_workers(db):
    checks = Worker.objects.create(name="checks@vm", host="vm", queues=["default"])
    trainer = Worker.objects.create(name="cpu@vm", host="vm", queues=["cpu", "training", own_queue("cpu@vm")])
    name = "playground-cpu@vm"
    playground = Worker.objects.create(name=name, host="vm", queues=[INFERENCE_QUEUE, own_queue(name)])
    return checks, trainer, playground


def worker_block(page: str, name: str) -> str:
    return page.split(f'data-worker="{name}"')[1].split('<div class="worker')[0].split("</section>")[0]


def test_the_gpus_page_offers_drain_only_for_training_workers_and_says_what_each_does(three_workers):
    checks, trainer, playground = three_workers
    staff = User.objects.create_user("boss", is_staff=True)
    page = secure_client(staff).get("/gpus/").content.decode()
    assert "Every training worker" not in page
    assert (
        "the checks worker (model checks), the token counts worker, the periodic jobs worker and the playground" in page
    )
    assert ">Drain</button>" in worker_block(page, trainer.name)
    assert "Takes training runs." in worker_block(page, trainer.name)
    for worker in (checks, playground):
        assert "Drain" not in worker_block(page, worker.name) and "No run." not in worker_block(page, worker.name)
    assert "Runs the periodic jobs (failing lost runs and generations, upload cleanup); takes no training run." in (
        worker_block(page, checks.name)
    )
    assert "Answers the playground; takes no training run." in worker_block(page, playground.name)


def test_draining_a_worker_that_takes_no_training_run_is_refused_clearly(three_workers):
    checks, trainer, playground = three_workers
    client = secure_client(User.objects.create_user("boss", is_staff=True))
    for worker in (checks, playground):
        answer = client.post(f"/gpus/workers/{worker.pk}/drain/", {"drained": "1"}, follow=True)
        assert answer.status_code == 200
        assert f"{worker.name} takes no training run" in answer.content.decode()
        assert not Worker.objects.get(pk=worker.pk).drained
    assert not AuditEvent.objects.filter(action="worker.drain").exists()
    # A playground worker drained before this rule can still be undrained.
    Worker.objects.filter(pk=playground.pk).update(drained=True)
    assert ">Undrain</button>" in worker_block(client.get("/gpus/").content.decode(), playground.name)
    client.post(f"/gpus/workers/{playground.pk}/drain/", {"drained": "0"})
    assert not Worker.objects.get(pk=playground.pk).drained
    client.post(f"/gpus/workers/{trainer.pk}/drain/", {"drained": "1"})
    assert Worker.objects.get(pk=trainer.pk).drained


# --- 3. Settings: a quota in GiB, the live-run limit under its own heading ----------------------------------------


def settings_form(page: str) -> str:
    return page.split('class="card settings-form"')[1].split("</form>")[0]


def test_the_upload_quota_is_shown_and_typed_as_a_size(db):
    client = secure_client(User.objects.create_user("boss", is_staff=True))
    PortalSettings.objects.filter(pk=1).delete()
    page = client.get("/settings/").content.decode()
    box = re.search(r'<input[^>]*name="upload_quota_bytes"[^>]*>', page).group(0)
    assert 'value="10 GiB"' in box and 'type="text"' in box
    assert "Now: 10 GiB (10,737,418,240 bytes)." in page
    assert "10737418240" not in box

    for typed, stored in (("5 GiB", 5 * GIB), ("500 MB", 500_000_000), ("1.5 GiB", 3 * GIB // 2), ("4096", 4096)):
        assert client.post("/settings/", {"upload_quota_bytes": typed}).status_code == 302, typed
        assert PortalSettings.load().upload_quota_bytes == stored, typed
    assert 'value="4 KiB"' in client.get("/settings/").content.decode()

    for typed in ("lots", "10 G", "-1 GiB"):
        refused = client.post("/settings/", {"upload_quota_bytes": typed})
        assert refused.status_code == 422, typed
        assert "Upload quota: " in refused.content.decode() and PortalSettings.load().upload_quota_bytes == 4096
    assert "unknown unit" in client.post("/settings/", {"upload_quota_bytes": "10 G"}).content.decode()


def test_the_live_run_limit_has_its_own_heading_and_says_it_is_the_gpus_pages_too(db):
    page = settings_form(
        secure_client(User.objects.create_user("boss", is_staff=True)).get("/settings/").content.decode()
    )
    uploads, runs = page.split("<h2>Uploads</h2>")[1].split("<h2>Runs</h2>")
    assert 'name="upload_quota_bytes"' in uploads and "live_runs_per_member" not in uploads
    assert 'name="live_runs_per_member"' in runs and "GPUs page" in runs


def test_the_readme_says_the_live_run_limit_is_on_both_pages():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    rows = [line for line in readme.splitlines() if "live-run limit" in line or "MTM_LIVE_RUNS_PER_MEMBER`" in line]
    assert rows and all("GPUs page" in row and "Settings page" in row for row in rows if row.startswith("| `"))


# --- 4. The run page follows the run ------------------------------------------------------------------------------


def config_value(html: str, key: str) -> str:
    cell = html.split(f'class="config-{key}"')[1].split("</tr>")[0]
    return re.sub(r"<[^>]+>", "", cell.split("<td>")[1]).strip()


def test_the_configuration_and_device_follow_the_run_while_it_is_live(portal_roots):
    member = User.objects.create_user("member")
    project = a_project(portal_roots, member, "test-org/tiny-llama")
    run = TrainingRun.objects.create(project=project, started_by=member)
    RunPlacement.objects.create(run=run, queue="training", waiting_for="a free training worker")
    client = secure_client(member)
    page = client.get(f"/projects/runs/{run.pk}/").content.decode()
    assert config_value(page, "resolved_revision") == "not resolved yet"
    assert config_value(page, "resolved_path") == "not resolved yet"

    # A worker took it and resolved the model; the trainer has not named its device yet.
    worker = Worker.objects.create(name="gpu0@vm", host="vm", queues=["training"])
    Device.objects.create(worker=worker, index=0, name="NVIDIA H100 80GB HBM3", total_bytes=80 * GIB)
    snapshot = "/hf/hub/models--test-org--tiny-llama/snapshots/" + COMMIT
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.TRAINING, resolved_source="cache", resolved_path=snapshot, resolved_revision=COMMIT
    )
    RunPlacement.objects.filter(run=run).update(worker_name=worker.name)
    polled = client.get(f"/projects/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert polled.lstrip().startswith('<div id="run-live"')
    assert config_value(polled, "resolved_revision") == COMMIT
    assert config_value(polled, "resolved_path") == snapshot
    device = polled.split('class="run-device">')[1].split("</dd>")[0]
    assert device.startswith("cuda:0 (NVIDIA H100 80GB HBM3)") and "the trainer confirms it" in device

    TrainingRun.objects.filter(pk=run.pk).update(device="cuda:0 (NVIDIA H100 80GB HBM3)")
    polled = client.get(f"/projects/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert polled.split('class="run-device">')[1].split("</dd>")[0] == "cuda:0 (NVIDIA H100 80GB HBM3)"

    # On a CPU worker, before the trainer reports: "cpu", as the trainer will name it.
    cpu = Worker.objects.create(name="cpu@vm", host="vm", queues=["cpu", "training"])
    TrainingRun.objects.filter(pk=run.pk).update(device="")
    RunPlacement.objects.filter(run=run).update(worker_name=cpu.name)
    polled = client.get(f"/projects/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert polled.split('class="run-device">')[1].split("</dd>")[0].startswith("cpu <span")
