"""Heartbeats and the reaper: rows with old beats are failed, fresh ones are left alone; the reaper is the periodic
job Celery beat sends, and reading a run never writes to it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from projects.models import RunStage, RunStatus, TrainingProject, TrainingRun
from projects.runs.liveness import heartbeat, reap_stale_runs
from projects.runs.tasks import reap_runs
from tests.api_client import call, make_user_token


def make_run(status, beat_age_seconds, **fields):
    owner = User.objects.get_or_create(username="owner")[0]
    project = TrainingProject.objects.create(
        name="p", owner=owner, model_name="org/m", dataset_path="/d", output_directory="/o"
    )
    beat = timezone.now() - timedelta(seconds=beat_age_seconds) if beat_age_seconds is not None else None
    return TrainingRun.objects.create(
        project=project, status=status, heartbeat_at=beat, started_at=timezone.now() - timedelta(hours=1), **fields
    )


def test_stale_runs_fail_with_their_stage_and_fresh_ones_stay(db, settings):
    settings.MTM_HEARTBEAT_TIMEOUT = 60
    stale_training = make_run(RunStatus.TRAINING, 600, last_checkpoint="/o/checkpoint-40", worker_host="gpu1:12")
    stale_validating = make_run(RunStatus.VALIDATING, 600)
    never_beat = make_run(RunStatus.RESOLVING, None)
    fresh = make_run(RunStatus.TRAINING, 5)
    queued = make_run(RunStatus.QUEUED, None)
    ended = make_run(RunStatus.SUCCEEDED, 6000)
    assert sorted(reap_stale_runs()) == sorted([stale_training.pk, stale_validating.pk, never_beat.pk])
    for run in (stale_training, stale_validating, never_beat, fresh, queued, ended):
        run.refresh_from_db()
    assert stale_training.status == RunStatus.FAILED and stale_training.stage_failed == RunStage.TRAIN
    assert stale_training.error_code == "worker_lost" and "gpu1:12" in stale_training.error_message
    assert "/o/checkpoint-40" in stale_training.error_hint and stale_training.finished_at is not None
    assert stale_validating.stage_failed == RunStage.VALIDATE and never_beat.stage_failed == RunStage.RESOLVE
    assert (fresh.status, queued.status, ended.status) == (RunStatus.TRAINING, RunStatus.QUEUED, RunStatus.SUCCEEDED)
    assert reap_stale_runs() == []


def test_the_api_shows_a_run_the_periodic_job_reaped_and_reading_never_writes(db, settings):
    settings.MTM_HEARTBEAT_TIMEOUT = 60
    run = make_run(RunStatus.TRAINING, 600)
    _, token = make_user_token("reader")
    for path in (f"/runs/{run.pk}", f"/projects/{run.project_id}", f"/projects/{run.project_id}/runs", "/projects"):
        assert call(Client(), "GET", path, token=token).status_code == 200
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.TRAINING  # a GET is no write
    assert reap_runs.apply().get() == [run.pk]  # what beat sends
    body = call(Client(), "GET", f"/runs/{run.pk}", token=token).json()
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"


def test_reap_runs_command(db, settings, capsys):
    settings.MTM_HEARTBEAT_TIMEOUT = 60
    run = make_run(RunStatus.TRAINING, 600)
    call_command("reap_runs")
    assert f"failed 1 run(s) whose worker was lost: [{run.pk}]" in capsys.readouterr().out


def test_heartbeat_beats_while_the_block_runs(transactional_db, settings):
    run = make_run(RunStatus.TRAINING, 600)
    before = TrainingRun.objects.get(pk=run.pk).heartbeat_at
    beats = []
    with heartbeat(run.pk, every=0.05):
        entered = TrainingRun.objects.get(pk=run.pk).heartbeat_at  # the beat heartbeat() gives on entry
        deadline = time.monotonic() + 30  # a bound for a broken beat, not a timing under test
        while len(beats) < 3 and time.monotonic() < deadline:
            seen = TrainingRun.objects.get(pk=run.pk).heartbeat_at
            if seen != (beats[-1] if beats else entered):
                beats.append(seen)
            time.sleep(0.01)
        during = TrainingRun.objects.get(pk=run.pk).heartbeat_at
    assert entered > before and during > before
    # Three more beats while the block ran, each later than the last: the periodic beat, not only the first one.
    assert len(beats) == 3 and entered < beats[0] < beats[1] < beats[2], (entered, beats)
    settings.MTM_HEARTBEAT_TIMEOUT = 60
    assert reap_stale_runs() == []


def test_the_run_page_shows_a_run_the_periodic_job_reaped_and_reading_never_writes(db, settings):
    from tests.clients import secure_client

    settings.MTM_HEARTBEAT_TIMEOUT = 60
    run = make_run(RunStatus.TRAINING, 600)
    client = secure_client(User.objects.create_user("viewer"))
    for url in (f"/projects/runs/{run.pk}/", f"/projects/{run.project_id}/", "/projects/"):
        assert client.get(url).status_code == 200
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.TRAINING  # a GET is no write
    reap_runs()
    response = client.get(f"/projects/runs/{run.pk}/", HTTP_HX_REQUEST="true")
    assert response.status_code == 286  # ended: polling stops
    assert "Worker lost" in response.content.decode()


@pytest.mark.database
@pytest.mark.slow
def test_beat_and_a_worker_reap_a_silent_run(transactional_db, start_worker, celery_broker, tmp_path):
    """The deployment's way: `celery beat` sends the reaper on its schedule and a worker runs it."""
    from tests.workers import CeleryBeat

    silent = make_run(RunStatus.TRAINING, 600)
    fresh = make_run(RunStatus.TRAINING, 0)
    env = {"MTM_HEARTBEAT_TIMEOUT": "120", "MTM_REAP_SECONDS": "1"}
    start_worker(queues="default", extra_env=env).wait_ready()
    beat = CeleryBeat(celery_broker, tmp_path / "beat.log", env)
    try:
        beat.wait_ready()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and TrainingRun.objects.get(pk=silent.pk).status == RunStatus.TRAINING:
            time.sleep(0.3)
    finally:
        beat.stop()
    silent.refresh_from_db()
    fresh.refresh_from_db()
    assert silent.status == RunStatus.FAILED and silent.error_code == "worker_lost", beat.log_text()
    assert fresh.status == RunStatus.TRAINING
    assert "projects.reap_stale_runs" in beat.log_text()


def test_a_cancelled_trainer_that_will_not_stop_is_killed_and_the_outcome_says_it_was_after_a_cancel():
    """The hostile tester's cancelled run was killed 600 s later and failed as if the OOM killer had struck: the
    supervisor now reports that its own kill followed a cancel, and the run stage ends such a run cancelled."""
    import subprocess
    import sys

    from projects.runs.supervisor import CANCEL_KILL_SECONDS, CANCEL_TERM_SECONDS, _escalate

    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline() == b"ready\n"
    assert _escalate(proc, CANCEL_TERM_SECONDS + 1) is False  # SIGTERM first, which this child ignores
    assert proc.poll() is None
    assert _escalate(proc, CANCEL_KILL_SECONDS + 1) is True
    assert proc.wait(10) == -9
