"""A run on 2 devices (DDP through torchrun, on the CPU with 2 processes) on a real worker owning two processes:
a rank killed mid-training fails the run naming that rank; a killed worker takes every rank with it and the run is
reaped."""

from __future__ import annotations

import psutil
import pytest
from django.contrib.auth.models import User

from projects.models import RunStage, RunStatus
from tests.multi_device_helpers import env_of, project, ranks_of, wait_for_report
from tests.pipeline_helpers import age_heartbeat, start, wait_for_end


def training_on_two_ranks(portal_roots, worker, name: str):
    """A member's long two-device run, once it has trained 2 steps, and its two rank processes."""
    wait_for_report(2)
    owner = User.objects.create_user("member")
    run = start(project(portal_roots, owner, name, {"max_steps": 2000, "save_steps": 1000}), owner)
    run = wait_for_end(run.pk, timeout=240, until=lambda r: (r.progress or {}).get("step", 0) >= 2)
    ranks = ranks_of(run, worker)
    assert sorted(env_of(p)["RANK"] for p in ranks) == ["0", "1"]
    return run, ranks


@pytest.mark.slow
def test_a_rank_killed_mid_training_fails_the_run_naming_that_rank_and_no_rank_is_left(
    portal_roots, transactional_db, tiny_llama_in_cache, two_process_worker
):
    run, ranks = training_on_two_ranks(portal_roots, two_process_worker, "killed")
    assert run.status == RunStatus.TRAINING
    next(p for p in ranks if env_of(p)["RANK"] == "1").kill()

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

    run, ranks = training_on_two_ranks(portal_roots, two_process_worker, "orphans")
    two_process_worker.kill()  # SIGKILL to the worker's process group; each rank is in a session of its own
    gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    age_heartbeat(run.pk)  # the heartbeat timeout passes without a beat
    assert reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "worker_lost")
