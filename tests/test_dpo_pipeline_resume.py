"""A DPO run end to end, cancelled to a checkpoint and resumed: a real worker on the real Redis broker, TRL's
DPOTrainer in the real trainer child on the CPU, the tiny Llama in a temp HF cache. Nothing of ours is mocked; steps
are kept to a handful."""

from __future__ import annotations

import pytest

from projects.models import RunStatus
from tests.dpo_helpers import dpo_project
from tests.pipeline_helpers import cancel_once_trained, start, wait_for_end

pytestmark = pytest.mark.slow


def test_a_dpo_run_cancels_to_a_checkpoint_and_a_resume_finishes_it(portal, tiny_llama_in_cache, celery_worker):
    project = dpo_project(
        portal, tiny_llama_in_cache[0], "prefs-cancel", {"max_steps": 400, "save_steps": 1000, "learning_rate": 0.001}
    )
    run = cancel_once_trained(start(project, portal["user"]), portal["user"], 2)
    stopped_at = int(run.last_checkpoint.rsplit("-", 1)[1])

    project.hyperparameters = {**project.hyperparameters, "max_steps": stopped_at + 2}
    project.save()
    resumed = wait_for_end(start(project, portal["user"], resume=True).pk)
    assert resumed.status == RunStatus.SUCCEEDED, (resumed.error_message, resumed.log_tail[-3000:])
    assert resumed.resumed_from.endswith(f"checkpoint-{stopped_at}")
    assert max(m["step"] for m in resumed.metrics) == stopped_at + 2
    assert all("reward_margin" in m for m in resumed.metrics if m["step"] > stopped_at)
