"""Two runs of one project end to end, each in its own folder: a real worker on the real Redis broker, the real
trainer on the CPU, the tiny Llama in a temp HF cache. Nothing of ours is mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from projects.models import RunStatus
from tests.pipeline_helpers import make_project, start, wait_for_end

pytestmark = pytest.mark.slow


def test_two_runs_of_one_project_keep_their_own_files(portal, tiny_llama_in_cache, celery_worker):
    """The second run's checkpoint rotation and final save touch nothing of the first run's."""
    hyper = {"max_steps": 4, "save_steps": 2, "save_total_limit": 1}
    project = make_project(portal, tiny_llama_in_cache[0], name="twice", hyper=hyper, validation_prompt="Say hello:")
    first = wait_for_end(start(project, portal["user"]).pk)
    assert first.status == RunStatus.SUCCEEDED, (first.error_message, first.log_tail[-3000:])
    first_files = {
        path.relative_to(first.run_folder): path.read_bytes()
        for path in Path(first.run_folder).rglob("*")
        if path.is_file()
    }
    assert Path("checkpoint-4/trainer_state.json") in first_files and Path("mtm_manifest.json") in first_files
    second = wait_for_end(start(project, portal["user"]).pk)
    assert second.status == RunStatus.SUCCEEDED, (second.error_message, second.log_tail[-3000:])
    assert second.run_folder != first.run_folder
    assert {
        path.relative_to(first.run_folder): path.read_bytes()
        for path in Path(first.run_folder).rglob("*")
        if path.is_file()
    } == first_files
    assert (Path(second.run_folder) / "checkpoint-4").is_dir()
    assert not (Path(project.output_directory) / "mtm_manifest.json").exists()  # nothing at the top any more
