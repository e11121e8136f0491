"""A run cancelled mid-training, then resumed from its checkpoint: a real worker on the real Redis broker, the real
trainer on the CPU, the tiny Llama in a temp HF cache. Nothing of ours is mocked."""

from __future__ import annotations

import pytest

from projects.models import RunStatus
from tests.pipeline_helpers import cancel_once_trained, make_project, start, wait_for_end

pytestmark = pytest.mark.slow


def test_cancel_mid_run_then_resume_from_checkpoint(portal, tiny_llama_in_cache, celery_worker):
    project = make_project(
        portal,
        tiny_llama_in_cache[0],
        name="cancel",
        hyper={"max_steps": 400, "save_steps": 1000, "learning_rate": 0.001},
    )
    run = cancel_once_trained(start(project, portal["user"]), portal["user"], 3)
    assert run.last_checkpoint and "checkpoint-" in run.last_checkpoint
    stopped_at = int(run.last_checkpoint.rsplit("-", 1)[1])
    assert 3 <= stopped_at < 400
    assert run.progress["step"] == stopped_at  # the step shown is the checkpoint's

    project.hyperparameters = {**project.hyperparameters, "max_steps": stopped_at + 4}
    project.save()
    resumed = wait_for_end(start(project, portal["user"], resume=True).pk)
    assert resumed.status == RunStatus.SUCCEEDED, (resumed.error_message, resumed.log_tail[-3000:])
    assert resumed.resumed_from.endswith(f"checkpoint-{stopped_at}")
    assert resumed.resumed_from.startswith(run.run_folder + "/")  # the cancelled run's own checkpoint
    assert resumed.run_folder != run.run_folder
    # The chart shows the whole history: the cancelled run's points up to its checkpoint, then the new ones.
    inherited = [m for m in resumed.metrics if m["step"] <= stopped_at]
    assert inherited == [m for m in run.metrics if m["step"] <= stopped_at] and inherited
    assert min(m["step"] for m in resumed.metrics if m not in inherited) > stopped_at
    assert resumed.progress["step"] == resumed.progress["total_steps"] == stopped_at + 4
