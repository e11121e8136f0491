"""Faults against real processes: a worker killed mid-training. Nothing lost, no run stuck "running"."""

# ruff: noqa: F811  (the `portal` fixture imported from tests.fault_helpers is the tests' parameter)

from __future__ import annotations

from pathlib import Path

import pytest

from projects.models import RunStage, RunStatus
from projects.runs.liveness import reap_stale_runs
from tests.fault_helpers import LONG, assert_trainer_dies, portal, project  # noqa: F401  (portal: a fixture)
from tests.pipeline_helpers import age_heartbeat, start, wait_for_end

pytestmark = pytest.mark.slow


def test_worker_killed_mid_training_is_reaped_and_resume_continues(portal, start_worker):
    worker = start_worker().wait_ready()
    proj = project(portal, "killed", LONG)
    run = start(proj, portal["user"])
    run = wait_for_end(run.pk, until=lambda r: "checkpoint-" in r.last_checkpoint and r.progress.get("step", 0) >= 4)
    worker.kill()  # SIGKILL to the worker's process group: no warm shutdown, no chance to record anything
    assert reap_stale_runs() == []  # its last beat is recent: not lost yet
    age_heartbeat(run.pk)  # the timeout passes without a beat
    assert reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.TRAIN
    assert run.error_code == "worker_lost" and "Worker lost" in run.error_message
    assert "Resume" in run.error_hint and run.last_checkpoint in run.error_hint
    assert_trainer_dies(f"{worker.var_dir}/runs/{run.pk}/")

    # The newest complete checkpoint: the kill may have cut one short (no trainer_state.json), and resume skips it.
    checkpoint_step = max(
        int(p.parent.name.split("-")[1])
        for p in Path(run.run_folder).glob("checkpoint-*/trainer_state.json")  # the run's own folder
    )
    proj.hyperparameters = {**proj.hyperparameters, "max_steps": checkpoint_step + 3}
    proj.save()
    start_worker().wait_ready()
    resumed = wait_for_end(start(proj, portal["user"], resume=True).pk)
    assert resumed.status == RunStatus.SUCCEEDED, (resumed.error_message, resumed.log_tail[-2000:])
    assert resumed.resumed_from.endswith(f"checkpoint-{checkpoint_step}")
