"""A run on 2 devices (DDP through torchrun, on the CPU with 2 processes) through the pipeline and a real worker
owning two processes: it trains, validates and resumes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from mtm.models import ApiToken
from projects.models import RunStatus
from tests.api_client import call
from tests.clients import secure_client
from tests.multi_device_helpers import project, wait_for_report
from tests.pipeline_helpers import start, wait_for_end
from workers.queues import devices_queue


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
