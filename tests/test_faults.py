"""Faults: each one a test against real processes (more in the other test_faults_*.py files). Nothing lost, no run
stuck "running"."""

# ruff: noqa: F811  (the `portal` fixture imported from tests.fault_helpers is the tests' parameter)

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from projects.models import RunStage, RunStatus
from tests.fault_helpers import LONG, portal, project  # noqa: F401  (portal: a fixture)
from tests.pipeline_helpers import start, wait_for_end

pytestmark = pytest.mark.slow


def test_broker_down_at_start_then_back_without_restart(portal, celery_broker):
    from tests.redis_server import PrivateRedis, free_port
    from tests.workers import app_publishing_to

    port = free_port()
    dead = f"redis://127.0.0.1:{port}/0"
    proj = project(portal, "broker")
    with app_publishing_to(dead):
        started = time.monotonic()
        run = start(proj, portal["user"])
        waited = time.monotonic() - started
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.QUEUE
        assert run.error_code == "broker_unavailable"
        assert "could not be queued" in run.error_message and "press Start again" in run.error_hint
        assert waited < 30  # the person gets an answer, not a hung page
        server = PrivateRedis(port=port)
        try:
            again = start(proj, portal["user"])  # no restart of anything: the same process retries
            again.refresh_from_db()
            assert again.status == RunStatus.QUEUED and again.task_ids.get("resolve")
            import redis

            # The message waits in the queue the run was placed on (a run is one task on a training worker).
            assert again.placement.queue == "training"
            assert redis.Redis.from_url(dead).llen(again.placement.queue) == 1
        finally:
            server.stop()


def test_output_directory_disappears_during_training(portal, start_worker):
    start_worker().wait_ready()
    proj = project(portal, "vanish", LONG)
    run = wait_for_end(start(proj, portal["user"]).pk, until=lambda r: r.progress.get("step", 0) >= 2)
    # The trainer keeps writing checkpoints while the folder is removed, so one pass may meet a new file.
    for _ in range(50):
        shutil.rmtree(proj.output_directory, ignore_errors=True)
        if not os.path.exists(proj.output_directory):
            break
        time.sleep(0.1)
    assert not os.path.exists(proj.output_directory)
    run = wait_for_end(run.pk, timeout=120)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.TRAIN
    assert run.error_code in ("output_directory_vanished", "training_crashed"), run.error_message
    assert proj.output_directory in run.error_message


def test_output_disk_fills_during_training(portal, start_worker, tmp_path):
    mount = tmp_path / "outputs" / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        start_worker(extra_env={"MTM_MIN_FREE_BYTES": "0"}).wait_ready()  # let the disk really fill
        proj = project(portal, "full", {**LONG, "save_steps": 1}, output=mount / "out")
        run = wait_for_end(start(proj, portal["user"]).pk, timeout=180)
        assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.TRAIN, run.error_message
        assert run.error_code == "disk_full", (run.error_code, run.error_message)
        assert "full" in run.error_message and "Free space" in run.error_hint
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_low_free_space_stops_training_before_the_disk_fills(portal, start_worker):
    start_worker(extra_env={"MTM_MIN_FREE_BYTES": str(1 << 62)}).wait_ready()
    run = wait_for_end(start(project(portal, "threshold", LONG), portal["user"]).pk, timeout=120)
    assert run.status == RunStatus.FAILED and run.error_code == "disk_full"
    assert "nearly full" in run.error_message and "df -h" in run.error_hint


def _tree(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_output_folder_swapped_for_a_link_mid_training_writes_nothing_there(portal, start_worker):
    """A member who can write in the output root renames the run's folder away and links another member's folder
    in its place: the trainer keeps writing in the folder it started in, and never rotates or saves through the
    link."""
    start_worker().wait_ready()
    outputs = portal["root"] / "outputs"
    alice = outputs / "alice1"
    (alice / "checkpoint-4").mkdir(parents=True)
    (alice / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    (alice / "model.safetensors").write_bytes(b"alice's weights")
    before = _tree(alice)
    mine = outputs / "mdir"
    proj = project(portal, "swapper", {**LONG, "save_steps": 1, "save_total_limit": 1}, mine)
    run = start(proj, portal["user"])
    run_folder = Path(run.run_folder)  # the run's own folder inside the project's: mdir/run-<id>
    assert run_folder.parent == mine
    # With save_total_limit 1 each checkpoint is rotated away by the next: wait for any from step 2 on.
    run = wait_for_end(run.pk, until=lambda r: any(run_folder.glob("checkpoint-[2-9]*")))
    assert run.status == RunStatus.TRAINING  # 2000 steps: the swap below happens while it trains
    mine.rename(outputs / "mdir.real")
    mine.symlink_to(alice, target_is_directory=True)
    run = wait_for_end(run.pk, timeout=120)
    assert (run.status, run.error_code) == (RunStatus.FAILED, "output_directory_changed"), run.error_message
    assert _tree(alice) == before  # nothing added, rotated away or rewritten
    assert any(p.name.startswith("checkpoint-") for p in (outputs / "mdir.real" / run_folder.name).iterdir())
