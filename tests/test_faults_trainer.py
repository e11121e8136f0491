"""Faults against real processes: a trainer that raises at a step, and one killed after writing its model. Nothing
lost, no run stuck "running"."""

# ruff: noqa: F811  (the `portal` fixture imported from tests.fault_helpers is the tests' parameter)

from __future__ import annotations

import pytest

from projects.models import RunStage, RunStatus
from tests.fault_helpers import LONG, portal, project  # noqa: F401  (portal: a fixture)
from tests.pipeline_helpers import start, wait_for_end

pytestmark = pytest.mark.slow


def test_training_raises_at_step_n_and_worker_keeps_serving(portal, start_worker):
    start_worker(extra_env={"MTM_FAULT_RAISE_AT_STEP": "5"}).wait_ready()
    run = wait_for_end(start(project(portal, "raises"), portal["user"]).pk)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.TRAIN
    assert run.error_code == "training_crashed" and "Injected fault at step 5" in run.error_message
    assert "Traceback" in run.log_tail and "RuntimeError" in run.log_tail
    # The same worker serves the next run (which also hits the fault: it proves the worker is alive and reports).
    second = wait_for_end(start(project(portal, "raises-again"), portal["user"]).pk)
    assert second.status == RunStatus.FAILED and second.error_code == "training_crashed"


def test_trainer_killed_after_writing_its_model_is_validated_and_publishable(portal, start_worker):
    """The attack: the trainer was killed (SIGKILL, as a rank torn down at shutdown is) after the final model,
    tokenizer and manifest were written; the run failed at train, and was then neither resumable (nothing left to
    train) nor publishable. What it wrote goes to validation like any run's result."""
    from mtm.audit import Actor, Channel
    from projects.publishing.services import publish_run

    start_worker(extra_env={"MTM_FAULT_KILL_AFTER_MANIFEST": "1"}).wait_ready()
    run = wait_for_end(start(project(portal, "late-kill"), portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error_message, run.log_tail[-2000:])
    assert run.validation["passed"] is True
    assert "The trainer ended badly after it had written the final model and mtm_manifest.json" in run.log_tail
    assert "killed by SIGKILL" in run.log_tail and run.summary.get("global_step") == 12  # from the manifest
    published = publish_run(run, "ops-team/late-kill", actor=Actor(portal["user"], Channel.CLI))
    assert published.path == run.run_folder
