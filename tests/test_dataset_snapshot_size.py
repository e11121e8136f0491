"""The resolve stage's copy of a dataset is bounded before it starts: a file larger than the limit when opened
(a sparse one costs its maker no disk) is refused by its size, read from the opened descriptor, before a byte is
copied; one that grows past the limit while it is copied is cut off at the limit. Either refusal names the file,
its size, the limit and what to do.

Real files (sparse ones made with truncate), the stage as the worker calls it, the bytes this process writes read
from /proc/self/io."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtm.audit import Actor
from projects.datasets import DEFAULT_MAX_BYTES
from projects.datasets.errors import DATASET_TOO_LARGE
from projects.models import RunStatus, TrainingRun
from projects.runs import dataset_snapshot, stages
from projects.runs.paths import PathChanged
from projects.services import create_project
from tests.pipeline_helpers import start
from tests.test_dataset_row_bound import jsonl_text, write
from tests.test_owned_paths import fields

pytestmark = pytest.mark.django_db

MiB = 1024**2


def bytes_written() -> int:
    """What this process has written through write() and its kin so far (the kernel's count)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


def her_run(team, model_name: str) -> tuple[TrainingRun, Path]:
    """Mallory's run on a small dataset of hers, saved and started while it was small."""
    dataset = write(team["root"] / "datasets" / "mine.jsonl", jsonl_text(10))
    data = fields(team["root"], model_name, dataset_path=str(dataset))
    project = create_project(actor=Actor.command_line(team["mallory"]), data=data)
    return start(project, team["mallory"]), dataset


def grow_sparse(path: Path, size: int) -> None:
    """The file made `size` bytes long in place, the rest a hole: no disk spent on it."""
    with open(path, "r+b") as file:
        file.truncate(size)


def test_a_dataset_over_the_limit_is_refused_before_a_byte_is_copied(team, tiny_llama_in_cache):
    """The attack: a dataset grown to a sparse 3 GiB after the project was saved; the resolve stage copied 2 GiB of
    it into the worker's folder before it refused it."""
    run, dataset = her_run(team, tiny_llama_in_cache[0])
    grow_sparse(dataset, 3 * 1024**3)
    before = bytes_written()
    assert stages.resolve_stage(run.pk) is False
    assert bytes_written() - before < 64 * MiB  # the run's rows and the log, never the file
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "resolve", DATASET_TOO_LARGE)
    assert f"Dataset {dataset} is 3.0 GiB (3,221,225,472 bytes)" in run.error_message
    assert "the limit is 2.0 GiB" in run.error_message and "nothing of it was copied" in run.error_message
    assert "split it" in run.error_hint and "start the run again" in run.error_hint
    assert DEFAULT_MAX_BYTES == 2 * 1024**3
    assert not (stages.run_dir(run.pk) / dataset_snapshot.SNAPSHOT_DIR).exists()


def test_the_size_is_read_from_the_opened_file(team, tiny_llama_in_cache):
    run, dataset = her_run(team, tiny_llama_in_cache[0])
    grow_sparse(dataset, 3 * MiB)
    work = stages.run_dir(run.pk)
    before = bytes_written()
    with pytest.raises(PathChanged) as refused:
        dataset_snapshot.snapshot_dataset(run, work, max_bytes=MiB)
    assert bytes_written() - before < MiB // 4
    problem = refused.value.problem
    assert problem.code == DATASET_TOO_LARGE and "3.0 MiB (3,145,728 bytes)" in problem.message
    assert "the limit is 1.0 MiB" in problem.message
    assert not (work / dataset_snapshot.SNAPSHOT_DIR).exists()
    grow_sparse(dataset, MiB)  # at the limit: copied whole
    assert dataset_snapshot.snapshot_dataset(run, work, max_bytes=MiB).stat().st_size == MiB


# Run as another process, as a member's shell would: waits until the copy has begun reading the file (the reader's
# descriptor of it has moved past its start, read from /proc), then makes the file 1 GiB long at once. It says
# "watching" first, and the copy starts only then: its start-up on a loaded machine could outlast the copy.
GROW_WHEN_READ = """
import os, sys, time
reader, path = sys.argv[1], sys.argv[2]
fds = f"/proc/{reader}/fd"
print("watching", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for fd in os.listdir(fds):
        try:
            if os.readlink(f"{fds}/{fd}") != path:
                continue
            with open(f"/proc/{reader}/fdinfo/{fd}") as info:
                pos = int(next(line for line in info if line.startswith("pos:")).split()[1])
        except (OSError, StopIteration):
            continue
        if pos > 0:
            os.truncate(path, 1 << 30)
            sys.exit(0)
sys.exit(1)
"""


def test_a_dataset_that_grows_while_it_is_copied_is_cut_off_at_the_limit(team, tiny_llama_in_cache):
    """Under the limit when opened, then grown to 1 GiB once the copy has begun: the copy stops at the limit."""
    run, dataset = her_run(team, tiny_llama_in_cache[0])
    grow_sparse(dataset, 120 * MiB)
    grower = subprocess.Popen(
        [sys.executable, "-c", GROW_WHEN_READ, str(os.getpid()), str(dataset)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert grower.stdout.readline() == "watching\n"
        before = bytes_written()
        with pytest.raises(PathChanged) as refused:
            dataset_snapshot.snapshot_dataset(run, stages.run_dir(run.pk), max_bytes=128 * MiB)
        assert bytes_written() - before <= 128 * MiB + 1
    finally:
        grower.kill()
        assert grower.wait() in (0, -9)
    assert os.path.getsize(dataset) == 1024**3
    problem = refused.value.problem
    assert problem.code == DATASET_TOO_LARGE
    assert f"Dataset {dataset} grew past the limit of 128.0 MiB while it was copied" in problem.message
    assert "120.0 MiB when opened" in problem.message and "start the run again" in problem.hint
    assert not (stages.run_dir(run.pk) / dataset_snapshot.SNAPSHOT_DIR).exists()
