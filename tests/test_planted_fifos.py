"""A FIFO, a link or a device a member plants where the portal reads (a checkpoint's trainer_state.json, a model
folder's config.json or weights, a finished run's folder) is refused and named; the read never waits for a writer
and never reads without end. Real FIFOs (os.mkfifo), real links, real /dev/zero; Start runs through the service.

A blocked read is detected by a watchdog process that, after GUARD_SECONDS, opens the FIFO for writing (which frees
every reader waiting on it) and says so; the test then fails. A process, not a thread: a library that opens by path
(safetensors) may wait in the open holding the GIL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from django.contrib.auth.models import User

from mtm.audit import Actor, Channel
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.scheduling.memory_estimate import EstimateError, read_model_shape
from projects.runs.services import RunRefused
from projects.runs.validation.checks import validate_output
from projects.services import create_project
from projects.trainer.outputs import MANIFEST_NAME
from tests.pipeline_helpers import start

GUARD_SECONDS = 30  # only so that a regression fails the test instead of hanging the suite
T = TypeVar("T")
FREE_FIFO = """
import os, sys, time
fifo, guard = sys.argv[1], float(sys.argv[2])
sys.stdin.readline()  # the caller's call starts now
time.sleep(guard)
print("freed", flush=True)
while True:  # each blocked open of the FIFO returns once a writer opens it
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass
    time.sleep(0.05)
"""


def returned(fifo: Path, call: Callable[[], T]) -> T:
    """call()'s answer (or its exception). Should it block on `fifo`, the watchdog frees it, and the test fails
    saying so."""
    watchdog = subprocess.Popen(
        [sys.executable, "-c", FREE_FIFO, str(fifo), str(GUARD_SECONDS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert watchdog.stdin is not None
    watchdog.stdin.write(b"go\n")
    watchdog.stdin.flush()
    try:
        return call()
    finally:
        watchdog.kill()
        said, _ = watchdog.communicate()
        assert b"freed" not in said, f"the call blocked on the FIFO {fifo} until a writer freed it"


# --- a resume's checkpoint ---------------------------------------------------------------------------------------


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("mallory", password="mallory-pass-1234")


@pytest.fixture
def project(portal_roots, owner, tiny_llama_in_cache) -> TrainingProject:
    data = {
        "name": "demo",
        "model_name": tiny_llama_in_cache[0],
        "dataset_path": str(portal_roots / "datasets" / "qa.jsonl"),
        "output_directory": str(portal_roots / "outputs" / "demo"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 16, "learning_rate": 0.001},
    }
    return create_project(data, actor=Actor(owner, Channel.CLI))


def stopped_run_with_checkpoint(project: TrainingProject, owner: User, step: int) -> Path:
    """A cancelled run of `project` with an empty checkpoint-`step` folder; the folder."""
    run = start(project, owner)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)
    folder = Path(run.run_folder) / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    return folder


def test_a_resume_from_a_checkpoint_whose_state_is_a_fifo_or_a_link_is_refused_at_once(project, owner, tmp_path):
    checkpoint = stopped_run_with_checkpoint(project, owner, 3)  # step 3 of max_steps 5: something is left
    state = checkpoint / "trainer_state.json"
    elsewhere = tmp_path / "her-state.json"
    elsewhere.write_text(json.dumps({"global_step": 3}))
    os.symlink(elsewhere, state)
    with pytest.raises(RunRefused) as refused:
        start(project, owner, resume=True)
    assert refused.value.problem.code == "checkpoint_unsafe"
    assert f"{state} is reached through a link" in refused.value.problem.message
    fifo = tmp_path / "trap.fifo"
    os.mkfifo(fifo)
    for planted in ("fifo", "link to a fifo"):
        state.unlink()
        os.mkfifo(state) if planted == "fifo" else os.symlink(fifo, state)
        with pytest.raises(RunRefused) as refused:
            returned(fifo if planted != "fifo" else state, lambda: start(project, owner, resume=True))
        assert refused.value.problem.code == "no_checkpoint", planted  # not a complete checkpoint
    assert TrainingRun.objects.filter(project=project).count() == 1


def test_a_trainer_state_flipped_between_a_file_and_a_fifo_never_holds_start(project, owner, tmp_path):
    """The race a member runs from her shell: a link at trainer_state.json renamed, over and over, between one to a
    regular file and one to a FIFO, so that the check sees a file and the read finds the FIFO."""
    checkpoint = stopped_run_with_checkpoint(project, owner, 9)  # at or past max_steps 5: refused when read
    regular, fifo = tmp_path / "state.json", tmp_path / "trap.fifo"
    regular.write_text(json.dumps({"global_step": 9}))
    os.mkfifo(fifo)
    os.symlink(regular, checkpoint / "trainer_state.json")
    stop = threading.Event()

    def flip() -> None:
        spare = checkpoint / "spare"
        while not stop.is_set():
            for target in (fifo, regular):
                with contextlib.suppress(FileExistsError):
                    os.symlink(target, spare)
                os.rename(spare, checkpoint / "trainer_state.json")

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    codes = set()
    try:
        for _ in range(150):
            with pytest.raises(RunRefused) as refused:
                returned(fifo, lambda: start(project, owner, resume=True))
            codes.add(refused.value.problem.code)
    finally:
        stop.set()
        flipper.join()
    assert codes <= {"no_checkpoint", "checkpoint_unsafe", "nothing_to_resume"}
    assert "checkpoint_unsafe" in codes  # the link was seen, and refused, not followed
    assert TrainingRun.objects.filter(project=project).count() == 1


# --- the memory estimate -----------------------------------------------------------------------------------------


@pytest.fixture
def model_folder(tmp_path, tiny_llama_dir) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, folder)
    return folder


def test_the_memory_estimate_refuses_a_fifo_config_at_once_naming_it(model_folder):
    (model_folder / "config.json").unlink()
    os.mkfifo(model_folder / "config.json")
    with pytest.raises(EstimateError) as refused:
        returned(model_folder / "config.json", lambda: read_model_shape(model_folder))
    assert str(refused.value) == f"config.json in {model_folder} cannot be read: it is a FIFO, not a regular file."


def test_the_memory_estimate_never_reads_a_device_without_end(model_folder):
    (model_folder / "config.json").unlink()
    os.symlink("/dev/zero", model_folder / "config.json")
    with pytest.raises(EstimateError, match="config.json in .* cannot be read: it is a device, not a regular file"):
        read_model_shape(model_folder)


def test_the_memory_estimate_refuses_a_fifo_in_place_of_the_weights(model_folder):
    weights = model_folder / "model.safetensors"
    weights.unlink()
    os.mkfifo(weights)
    with pytest.raises(EstimateError, match="model.safetensors in .*: unreadable header: it is a FIFO"):
        returned(weights, lambda: read_model_shape(model_folder))


# --- validation of a finished run's folder -----------------------------------------------------------------------


def finished_run_folder(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    """What a full fine-tune leaves: the model at the top and its manifest."""
    folder = tmp_path / "run-15"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"layout": {"model_dir": ".", "adapter_dir": None}}))
    return folder


def validated(folder: Path, fifo: Path):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return returned(fifo, lambda: validate_output(folder, "Hello", base_model_path=None, folder_fd=fd))
    finally:
        os.close(fd)


def test_validation_fails_the_files_check_naming_a_fifo_in_the_run_folder(tmp_path, tiny_llama_dir):
    folder = finished_run_folder(tmp_path, tiny_llama_dir)
    os.mkfifo(folder / "zz.json")
    report = validated(folder, folder / "zz.json")
    checks = {check.name: check for check in report.checks}
    assert not report.passed and not checks["files"].passed
    assert "zz.json (a FIFO)" in checks["files"].detail and str(folder) in checks["files"].detail
    assert "zz.json: it is a FIFO, not a regular file" in checks["json"].detail
    assert checks["load"].detail == "Not run: an earlier check failed."


def test_validation_names_a_link_or_a_device_and_never_reads_through_it(tmp_path, tiny_llama_dir):
    folder = finished_run_folder(tmp_path, tiny_llama_dir)
    theirs = tmp_path / "someone-elses.json"
    theirs.write_text("{}")
    os.symlink(theirs, folder / "evil.json")
    os.symlink("/dev/zero", folder / "tokenizer_extra.json")
    (folder / "sub").mkdir()
    os.mkfifo(folder / "sub" / "pipe")
    report = validated(folder, folder / "sub" / "pipe")
    files = report.checks[0]
    assert files.name == "files" and not files.passed
    assert "evil.json (a link), sub/pipe (a FIFO), tokenizer_extra.json (a link)" in files.detail
    assert "evil.json: it is a link" in report.checks[1].detail
