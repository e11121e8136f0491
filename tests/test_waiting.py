"""A run waiting for a busy training worker: it stays "queued" with its place in line, the reaper leaves it alone,
and it can be cancelled while it waits. Real workers as a deployment runs them (a default worker beside a
training worker), a first run paced long enough to keep the training worker busy."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from projects.models import RunStatus, TrainingRun
from projects.runs.tasks import reap_runs
from tests.clients import secure_client
from tests.pipeline_helpers import cancel, make_project, start, wait_for_end
from workers.models import SchedulingSettings

pytestmark = pytest.mark.slow

LONG = {"max_steps": 200_000, "save_steps": 100_000, "learning_rate": 0.001}  # cancelled by the test, never finished


@pytest.fixture
def portal(portal_roots, transactional_db, tiny_llama_in_cache):
    # One member's three runs wait in one line here: more than the default cap of live runs per member.
    SchedulingSettings.objects.update_or_create(pk=1, defaults={"live_runs_per_member": 0})
    return {"user": User.objects.create_user("ops"), "root": portal_roots, "model": tiny_llama_in_cache[0]}


def project(portal, name, hyper=None):
    return make_project(portal, portal["model"], name=name, hyper=hyper)


@pytest.mark.database
def test_a_run_waiting_for_a_busy_training_worker_is_queued_in_line_never_reaped_and_cancellable(
    portal, start_worker, settings
):
    start_worker(queues="default").wait_ready()
    trainer = start_worker(queues="training").wait_ready()
    busy = start(project(portal, "busy", LONG), portal["user"])
    wait_for_end(busy.pk, until=lambda r: r.status == RunStatus.TRAINING and r.progress.get("step", 0) >= 1)

    second = start(project(portal, "second"), portal["user"])
    third = start(project(portal, "third"), portal["user"])
    # Long past the heartbeat timeout (the waiting runs dated back, not waited for), with the reaper run as beat
    # sends it: a waiting run has nothing to beat for, and must not be taken for a lost one.
    long_ago = timezone.now() - timedelta(seconds=4 * settings.MTM_HEARTBEAT_TIMEOUT + 10)
    assert TrainingRun.objects.filter(pk__in=[second.pk, third.pk]).update(created_at=long_ago) == 2
    for _ in range(3):
        assert reap_runs.apply().get() == []
    second.refresh_from_db()
    assert second.status == RunStatus.QUEUED, (second.status, second.error_code, second.error_message)
    assert TrainingRun.objects.get(pk=busy.pk).status == RunStatus.TRAINING

    client = secure_client(portal["user"])
    page = client.get(f"/projects/runs/{third.pk}/").content.decode()
    owner = portal["user"].get_username()
    assert f"waiting for a free training worker: 2nd in line, behind run #{second.pk} ({owner})" in page
    assert (
        "waiting for a free training worker: no run ahead"
        in client.get(f"/projects/runs/{second.pk}/").content.decode()
    )

    # The GPUs page: who runs where, and the waiting runs in the order they will start.
    gpus = client.get("/gpus/").content.decode()
    assert f">run #{busy.pk}</a>" in gpus and "for ops" in gpus
    assert gpus.index(f">Run #{second.pk}</a>") < gpus.index(f">Run #{third.pk}</a>")

    cancel(second, portal["user"])
    assert TrainingRun.objects.get(pk=second.pk).status == RunStatus.CANCELLED
    assert "no run ahead" in client.get(f"/projects/runs/{third.pk}/").content.decode()
    cancel(third, portal["user"])
    cancel(busy, portal["user"])
    assert wait_for_end(busy.pk).status == RunStatus.CANCELLED
    # The training worker then takes the two cancelled runs' messages and leaves them as they are.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and trainer.log_text().count("succeeded in") < 3:
        time.sleep(0.5)
    assert trainer.log_text().count("succeeded in") == 3, trainer.log_text()[-3000:]
    for run in (second, third):
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED and run.started_at is None and not run.resolved_path
