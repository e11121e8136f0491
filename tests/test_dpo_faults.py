"""A DPO run whose worker is killed mid-training: reaped as an SFT run is, then resumed from its last complete
checkpoint by a new worker. Real processes, nothing mocked."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User

from projects.datasets.samples import sample_pairs
from projects.models import RunStage, RunStatus, TrainingProject
from projects.runs.liveness import reap_stale_runs
from tests.fault_helpers import assert_trainer_dies
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, age_heartbeat, start, wait_for_end, write_jsonl

pytestmark = pytest.mark.slow

LONG_DPO = {
    **FAST_HYPERPARAMETERS,
    "objective": "dpo",
    "max_steps": 2000,
    "save_steps": 2,
    "learning_rate": 0.001,
    "preference_pairs": 0,
    "max_seq_length": 48,
}


def test_a_dpo_run_whose_worker_is_killed_is_reaped_and_resume_continues(
    portal_roots, transactional_db, tiny_llama_in_cache, start_worker
):
    user = User.objects.create_user("ops")
    worker = start_worker().wait_ready()
    project = TrainingProject.objects.create(
        name="dpo-killed",
        owner=user,
        model_name=tiny_llama_in_cache[0],
        dataset_path=str(write_jsonl(portal_roots / "datasets" / "pairs.jsonl", sample_pairs(20))),
        method="lora",
        output_directory=str(portal_roots / "outputs" / "dpo-killed"),
        hyperparameters=LONG_DPO,
    )
    run = start(project, user)
    run = wait_for_end(run.pk, until=lambda r: "checkpoint-" in r.last_checkpoint and r.progress.get("step", 0) >= 3)
    worker.kill()
    age_heartbeat(run.pk)  # the heartbeat timeout passes without a beat
    assert reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, RunStage.TRAIN, "worker_lost")
    assert_trainer_dies(f"{worker.var_dir}/runs/{run.pk}/")

    checkpoint_step = max(
        int(p.parent.name.split("-")[1]) for p in Path(run.run_folder).glob("checkpoint-*/trainer_state.json")
    )
    project.hyperparameters = {**project.hyperparameters, "max_steps": checkpoint_step + 2}
    project.save()
    start_worker().wait_ready()
    resumed = wait_for_end(start(project, user, resume=True).pk)
    assert resumed.status == RunStatus.SUCCEEDED, (resumed.error_message, resumed.log_tail[-2000:])
    assert resumed.resumed_from.endswith(f"checkpoint-{checkpoint_step}")
    assert "reward_margin" in resumed.metrics[-1]
