"""A trainer that crashes fails its run and leaves the worker serving: a real worker on the real Redis broker, the
real trainer on the CPU, the tiny Llama in a temp HF cache. Nothing of ours is mocked."""

from __future__ import annotations

import pytest

from projects.models import RunStage, RunStatus
from tests.pipeline_helpers import make_project, start, wait_for_end

pytestmark = pytest.mark.slow


def test_training_crash_fails_the_run_and_the_worker_keeps_serving(portal, tiny_llama_in_cache, celery_worker):
    # A learning rate the hyperparameter check refuses only inside the child: the child reports and exits 1.
    project = make_project(portal, tiny_llama_in_cache[0], name="crash", hyper={"learning_rate": -1})
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.TRAIN, run.error_message
    assert "learning_rate" in run.error_message
    ok = make_project(portal, tiny_llama_in_cache[0], name="after-crash")
    assert wait_for_end(start(ok, portal["user"]).pk).status == RunStatus.SUCCEEDED
