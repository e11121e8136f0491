"""Runs on several devices of one host (DDP through torchrun), on the CPU with 2 processes (gloo): the loss curve
matches one process with the same effective batch; a 2-process run through the pipeline and a real worker trains,
validates and resumes; a rank that dies fails the run with that rank's error; placement sends a run asking for N
devices only to a worker owning N, refuses it when no live worker does, and lets it wait when none is running."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from mtm.models import ApiToken
from projects.hyperparameters import Hyperparameters
from projects.models import RunStage, RunStatus, TrainingProject
from projects.runs.services import RunRefused
from projects.runs.supervisor import Supervision, supervise
from projects.trainer.events import EXIT_CANCELLED, EXIT_OK, trainer_command
from projects.trainer.outputs import MANIFEST_NAME
from projects.trainer.ranks import launch_command, launcher_outcome
from projects.trainer.spec import TrainerSpec, write_spec
from tests.api_client import call
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, age_heartbeat, start, wait_for_end, write_jsonl
from workers.models import Worker
from workers.queues import devices_queue, own_queue, worker_queues

REPO = Path(__file__).resolve().parent.parent
MODEL = "test-org/tiny-llama"
# Per-step losses of a 2-process run and a 1-process run with the same effective batch (same examples per step,
# gradients averaged over all their tokens): equal but for the order of float additions. Measured: ≤ 3e-7 relative.
LOSS_TOLERANCE = 1e-4
ROWS = [{"prompt": f"Question {i}: what is {i} plus {i}? Answer:", "completion": f" {2 * i}."} for i in range(32)]


# -- the trainer under torchrun ----------------------------------------------------------------------------------


def child(tmp: Path, name: str, devices: int, extra_env: dict[str, str] | None = None, cancel_at=0, **hyper):
    """Run the trainer as the pipeline starts it (torchrun for several devices) and follow it with the supervisor."""
    model, data = tmp / "model", tmp / "data.jsonl"
    spec = TrainerSpec(
        model_path=model,
        model_name=MODEL,
        revision="0" * 40,
        dataset_path=data,
        output_dir=tmp / name,
        method="full",
        hyperparameters={
            "max_steps": 3,
            "learning_rate": 0.01,
            "logging_steps": 1,
            "save_steps": 1000,
            "max_seq_length": 64,
            "precision": "fp32",
            "devices": devices,
            **hyper,
        },
        device="cpu",
        cancel_file=tmp / f"{name}.cancel",
    )
    spec_path = write_spec(spec, tmp / f"{name}.json")
    events: list[dict] = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "MTM_TORCH_THREADS": "2"}
    outcome = supervise(
        trainer_command(spec_path, sys.executable, devices),
        cwd=REPO,
        env={**env, **(extra_env or {})},
        cancel_file=tmp / f"{name}.cancel",
        log_path=tmp / f"{name}.log",
        sup=Supervision(
            on_event=events.append,
            should_cancel=lambda: bool(cancel_at) and any(e.get("step", 0) >= cancel_at for e in events),
            tick_seconds=0.5,
        ),
    )
    code, error = launcher_outcome(
        outcome.returncode, outcome.cancelled is not None, outcome.errors, outcome.tail, devices
    )
    return code, error, events, outcome


@pytest.fixture(scope="module")
def trainer_inputs(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "model").symlink_to(tiny_llama_dir)
    write_jsonl(tmp / "data.jsonl", ROWS)
    return tmp


def test_the_launch_command_is_torchrun_for_several_devices_and_plain_for_one():
    assert launch_command("s.json", 1, "py") == ["py", "-m", "projects.trainer", "s.json"]
    assert launch_command("s.json", 2, "py") == [
        *("py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *("-m", "projects.trainer", "s.json"),
    ]
    assert Hyperparameters(devices=2, batch_size=3, gradient_accumulation_steps=4).effective_batch == 24
    _, problems = Hyperparameters.from_dict({"devices": 0})
    assert [p.code for p in problems] == ["invalid_hyperparameter"] and "'devices'" in problems[0].message


@pytest.mark.slow
def test_two_processes_follow_the_loss_curve_of_one_with_the_same_effective_batch(trainer_inputs):
    code_one, error_one, one, _ = child(trainer_inputs, "one", 1, batch_size=4)
    code_two, error_two, two, _ = child(trainer_inputs, "two", 2, batch_size=2)
    assert (code_one, error_one, code_two, error_two) == (EXIT_OK, None, EXIT_OK, None), (error_one, error_two)

    def losses(events):
        return [(e["step"], e["loss"]) for e in events if e["event"] == "progress" and e.get("logged")]

    assert [s for s, _ in losses(two)] == [s for s, _ in losses(one)] == [1, 2, 3]
    for (_, a), (_, b) in zip(losses(one), losses(two), strict=True):
        assert abs(a - b) <= LOSS_TOLERANCE * abs(a), (losses(one), losses(two))
    # Rank 0 alone speaks and writes: one "started", one "finished", one manifest, one model.
    assert [e["event"] for e in two].count("started") == 1 and [e["event"] for e in two].count("finished") == 1
    started = next(e for e in two if e["event"] == "started")
    assert started["device"] == "2 × cpu (DDP)" and started["ranks"] == 2 and started["threads"] == 1
    manifest = json.loads((trainer_inputs / "two" / MANIFEST_NAME).read_text())
    assert manifest["ranks"] == 2 and manifest["effective_batch"] == 4 and manifest["metrics"]["global_step"] == 3
    assert sorted(p.name for p in (trainer_inputs / "two").glob("model*.safetensors")) == ["model.safetensors"]
    # The tokens of both ranks are counted (the same examples as the single process saw).
    finished = {len(run): next(e for e in run if e["event"] == "finished") for run in (one, two)}
    assert len({f["metrics"]["real_tokens"] for f in finished.values()}) == 1


@pytest.mark.slow
def test_a_cancelled_two_process_run_stops_every_rank_at_one_step_with_a_checkpoint(trainer_inputs):
    code, error, events, outcome = child(
        trainer_inputs, "cancelled", 2, cancel_at=2, batch_size=2, max_steps=2000, save_steps=1000
    )
    assert (code, error) == (EXIT_CANCELLED, None), outcome.tail[-3000:]
    cancelled = [e for e in events if e["event"] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["step"] >= 2
    step = cancelled[0]["step"]
    assert (trainer_inputs / "cancelled" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (trainer_inputs / "cancelled" / MANIFEST_NAME).exists()


@pytest.mark.slow
def test_a_rank_that_raises_fails_the_run_with_its_own_error_not_its_peers_lost_connection(trainer_inputs):
    code, error, events, outcome = child(
        trainer_inputs,
        "raises",
        2,
        {"MTM_FAULT_RAISE_AT_STEP": "2", "MTM_FAULT_RANK": "1"},
        batch_size=2,
        max_steps=50,
    )
    assert code != EXIT_OK and outcome.returncode != EXIT_OK
    assert error["rank"] == 1, outcome.errors
    assert error["message"].startswith("Rank 1 of 2: Training crashed: RuntimeError: Injected fault at step 2")
    assert not any(e["event"] == "finished" for e in events)


# -- through the pipeline, on a real worker owning two CPU processes ---------------------------------------------


@pytest.fixture
def two_process_worker(start_worker):
    return start_worker(
        queues="default,training,devices2",
        extra_env={"MTM_CPU_PROCESSES": "2", "MTM_HEARTBEAT_SECONDS": "1", "MTM_WORKER_REPORT_SECONDS": "1"},
    ).wait_ready()


def project(root, owner, name, hyper=None):
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", QA_ROWS * 8)
    return TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name=MODEL,
        dataset_path=str(dataset),
        method="full",
        output_directory=str(root / "outputs" / name),
        hyperparameters={**FAST_HYPERPARAMETERS, "devices": 2, "batch_size": 2, **(hyper or {})},
    )


def wait_for_report(processes: int) -> Worker:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker := Worker.objects.filter(cpu_processes=processes, stopped_at__isnull=True).first():
            return worker
        time.sleep(0.2)
    raise AssertionError(f"no worker reported owning {processes} processes")


@pytest.mark.slow
def test_a_two_process_run_trains_validates_and_resumes_on_a_real_worker(
    portal_roots, transactional_db, tiny_llama_in_cache, two_process_worker
):
    wait_for_report(2)
    owner = User.objects.create_user("member")
    proj = project(portal_roots, owner, "ddp", {"max_steps": 4, "save_steps": 2})
    run = start(proj, owner)
    assert run.placement.queue == devices_queue(2)
    run = wait_for_end(run.pk, timeout=300)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    assert run.device == "2 × cpu (DDP)" and run.progress["step"] == 4
    assert run.validation["passed"] is True
    page = secure_client(owner).get(f"/projects/runs/{run.pk}/").content.decode()
    assert "4 examples per step" in page and "2 devices × batch 2 × accumulation 1" in page
    _, token = ApiToken.issue(owner, "tests")
    body = call(Client(), "GET", f"/runs/{run.pk}", token=token).json()
    assert body["effective_batch"] == 4 and body["config"]["hyperparameters"]["devices"] == 2

    proj.hyperparameters = {**proj.hyperparameters, "max_steps": 6}
    proj.save()
    resumed = start(proj, owner, resume=True)
    resumed = wait_for_end(resumed.pk, timeout=300)
    assert resumed.status == RunStatus.SUCCEEDED, (resumed.error_message, resumed.log_tail[-3000:])
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.progress["step"] == 6
    assert [p["step"] for p in resumed.metrics][-2:] == [5, 6]


@pytest.mark.slow
def test_a_rank_killed_mid_training_fails_the_run_naming_that_rank_and_no_rank_is_left(
    portal_roots, transactional_db, tiny_llama_in_cache, two_process_worker
):
    wait_for_report(2)
    owner = User.objects.create_user("member")
    run = start(project(portal_roots, owner, "killed", {"max_steps": 2000, "save_steps": 1000}), owner)
    run = wait_for_end(run.pk, timeout=240, until=lambda r: (r.progress or {}).get("step", 0) >= 2)
    assert run.status == RunStatus.TRAINING
    ranks = _ranks_of(run, two_process_worker)
    assert sorted(_env(p)["RANK"] for p in ranks) == ["0", "1"]
    next(p for p in ranks if _env(p)["RANK"] == "1").kill()

    run = wait_for_end(run.pk, timeout=120)
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, RunStage.TRAIN, "trainer_killed")
    assert run.error_message.startswith("Rank 1 of 2 was killed by SIGKILL")
    psutil.wait_procs(ranks, timeout=30)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)


@pytest.mark.slow
def test_a_killed_worker_takes_every_rank_with_it_and_the_run_is_reaped(
    portal_roots, transactional_db, tiny_llama_in_cache, two_process_worker
):
    from projects.runs.liveness import reap_stale_runs

    wait_for_report(2)
    owner = User.objects.create_user("member")
    run = start(project(portal_roots, owner, "orphans", {"max_steps": 2000, "save_steps": 1000}), owner)
    run = wait_for_end(run.pk, timeout=240, until=lambda r: (r.progress or {}).get("step", 0) >= 2)
    ranks = _ranks_of(run, two_process_worker)
    assert sorted(_env(p)["RANK"] for p in ranks) == ["0", "1"]
    two_process_worker.kill()  # SIGKILL to the worker's process group; each rank is in a session of its own
    gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    age_heartbeat(run.pk)  # the heartbeat timeout passes without a beat
    assert reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "worker_lost")


def _ranks_of(run, worker) -> list[psutil.Process]:
    """The rank processes of `run` on `worker` (a spec path in that worker's own var/: another test session may have
    a run with the same id)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.endswith(f"{worker.var_dir}/runs/{run.pk}/spec.json") and _env(proc).get("RANK") in ("0", "1"):
            found.append(proc)
    return found


def _env(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except psutil.Error:
        return {}


# -- placement ---------------------------------------------------------------------------------------------------


def reported(name: str, processes: int = 1) -> Worker:
    """A CPU worker as it reports itself (queues as runworker --cpu --processes N gives them)."""
    return Worker.objects.create(
        name=name,
        host="host",
        queues=[*worker_queues(name, 0, 0, processes), "default"],
        held_models=[MODEL],
        cpu_processes=processes,
        ram_bytes=64 * 1024**3,
    )


def test_a_run_for_more_devices_than_any_live_worker_owns_is_refused_at_start(portal_roots, db, tiny_llama_in_cache):
    reported("one@host")
    reported("two@host", processes=2)
    owner = User.objects.create_user("member")
    proj = project(portal_roots, owner, "four", {"devices": 4})
    with pytest.raises(RunRefused) as refused:
        start(proj, owner)
    problem = refused.value.problem
    assert problem.code == "too_few_devices"
    assert "asks for 4 devices" in problem.message and "one@host: 1, two@host: 2" in problem.message
    assert "devices to 2 or fewer" in problem.hint and "--cpu --processes 4" in problem.hint
    assert not proj.runs.exists()
    page = secure_client(owner).get(
        "/gpus/estimate/", {"model_name": MODEL, "method": "full", "devices": "4", "max_seq_length": "64"}
    )
    assert "No live worker owns 4 devices" in page.content.decode()

    run = start(project(portal_roots, owner, "two", {"devices": 2}), owner)  # only the worker owning 2 consumes it
    assert (run.placement.queue, run.placement.waiting_for) == (devices_queue(2), "a training worker with ≥ 2 devices")
    assert devices_queue(2) not in Worker.objects.get(name="one@host").queues
    single = start(project(portal_roots, owner, "single", {"devices": 1}), owner)
    assert single.placement.queue == "training"


def test_with_no_worker_running_a_multi_device_run_waits_where_only_such_a_worker_looks(
    portal_roots, db, tiny_llama_in_cache
):
    owner = User.objects.create_user("member")
    run = start(project(portal_roots, owner, "waits", {"devices": 3}), owner)
    assert run.status == RunStatus.QUEUED and run.placement.queue == devices_queue(3)
    assert run.placement.waiting_for == "a training worker with ≥ 3 devices (none is running now)"
    assert worker_queues("w@h", 0, 0, 3)[-2:] == [devices_queue(2), devices_queue(3)]
    assert devices_queue(2) not in worker_queues("w@h", 1, 80 * 1024**3) and own_queue("w@h") in worker_queues(
        "w@h", 2, 80 * 1024**3
    )


def test_runworker_takes_processes_only_for_a_cpu_worker(db):
    with pytest.raises(CommandError, match="--processes is for a CPU worker"):
        call_command("runworker", gpus="0", processes=2)
    with pytest.raises(CommandError, match="--processes 0: give a number from 1"):
        call_command("runworker", cpu=True, processes=0)


def test_a_worker_owning_fewer_devices_than_the_run_asks_for_fails_it_before_launching(
    portal_roots, db, tiny_llama_in_cache, monkeypatch
):
    """A message left in a queue from before a worker was restarted with fewer devices: the stage says so."""
    from projects.runs import stages
    from projects.runs.state_machine import transition

    owner = User.objects.create_user("member")
    run = start(project(portal_roots, owner, "stale", {"devices": 2}), owner)
    monkeypatch.setenv("MTM_CPU_PROCESSES", "1")
    assert stages.resolve_stage(run.pk) is True
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "too_few_devices")
    assert "asks for 2 devices" in run.error_message and "owns 1" in run.error_message
    assert not transition(run.pk, RunStatus.TRAINING, RunStatus.SUCCEEDED)  # it has ended, nothing moves it on
