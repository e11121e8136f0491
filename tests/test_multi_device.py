"""Runs on several devices of one host (DDP through torchrun), on the CPU with 2 processes (gloo): the loss curve
matches one process with the same effective batch; placement sends a run asking for N devices only to a worker owning
N, refuses it when no live worker does, and lets it wait when none is running. The other test_multi_device_*.py files
stop such runs, and run them through the pipeline on a real worker."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from projects.hyperparameters import Hyperparameters
from projects.models import RunStatus
from projects.runs.services import RunRefused
from projects.trainer.events import EXIT_OK
from projects.trainer.outputs import MANIFEST_NAME
from projects.trainer.ranks import launch_command
from tests.clients import secure_client
from tests.multi_device_helpers import MODEL, child, project
from tests.pipeline_helpers import start
from workers.models import Worker
from workers.queues import devices_queue, own_queue, worker_queues

# Per-step losses of a 2-process run and a 1-process run with the same effective batch (same examples per step,
# gradients averaged over all their tokens): equal but for the order of float additions. Measured: ≤ 3e-7 relative.
LOSS_TOLERANCE = 1e-4


# -- the trainer under torchrun ----------------------------------------------------------------------------------


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


# -- through the pipeline, on a real worker owning two CPU processes ---------------------------------------------


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
