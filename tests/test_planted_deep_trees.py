"""A member with a shell nests folders (1,500 deep) or piles up entries in a folder the portal later removes or walks:
an upload's folder, a folder left in the uploads folder, a run folder's dataset snapshot, a trainer's staging folder,
a run folder validation reads. shutil.rmtree recursed once per level (RecursionError: a 500, or a stage that crashed);
now the removal is iterative, never follows a link, and stops past a bound saying what is left and what to do."""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_registry.models import PortalSettings
from mtm.audit import Actor
from mtm.shared import tree_removal
from mtm.shared.owned_files import make_staging, remove_tree
from mtm.shared.tree_removal import RemovalStopped, remove_path
from projects.datasets import DatasetError, store_upload, uploads_root
from projects.datasets.uploads import QUOTA_EXCEEDED, cleanup_uploads, discard_upload, receive_upload
from projects.models import RunStatus, TrainingRun, Upload
from projects.runs import folder_scan, stages
from projects.runs.dataset_snapshot import snapshot_dataset
from projects.runs.paths import create_run_folder
from projects.runs.validation.checks import validate_output
from projects.services import create_project
from tests.planted_trees import nest_folders, remove_planted
from tests.test_owned_paths import QA_BYTES, fields
from tests.test_run_folder_attacks import as_, run_of

DEPTH = 1_500  # well past Python's recursion limit of 1,000


@pytest.fixture
def plant():
    """Plant `DEPTH` folders, each inside the last, under a path; each planted path is removed at teardown with
    rm -rf (pytest's own clean-up of tmp_path is shutil.rmtree, which these trees make raise RecursionError)."""
    planted: list[Path] = []

    def nest(top: Path, depth: int = DEPTH) -> Path:
        top.parent.mkdir(parents=True, exist_ok=True)
        planted.append(top)
        os.mkdir(top)
        nest_folders(top, depth - 1)
        return top

    yield nest
    remove_planted(planted)


def deepest(top: Path) -> Path:
    return top.joinpath(*["a"] * (DEPTH - 1))


def fill(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            os.close(os.open(str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


class PlantingWhileStreamed(io.BytesIO):
    """An upload whose sender, while it streams, plants a deep tree in the upload's new folder (a member with a shell
    watching the uploads folder)."""

    def __init__(self, data: bytes, plant) -> None:
        super().__init__(data)
        self.plant = plant
        uploads_root().mkdir(parents=True, exist_ok=True)
        self.known = set(os.listdir(uploads_root()))

    def read(self, size: int | None = -1) -> bytes:
        for name in set(os.listdir(uploads_root())) - self.known:
            self.plant(uploads_root() / name / "deep")
            self.known.add(name)
        return super().read(size)


# --- uploads ------------------------------------------------------------------------------------------------------


def test_an_upload_folder_with_a_deep_tree_is_removed_with_the_upload(team, plant):
    actor = Actor.command_line(team["mallory"])
    received = receive_upload(actor, SimpleUploadedFile("qa.jsonl", QA_BYTES), "qa.jsonl")
    deep = plant(received.path.parent / "deep")
    assert deepest(deep).is_dir()
    assert discard_upload(received.path, actor=actor) is True
    assert not received.path.parent.exists() and not Upload.objects.exists()


def test_a_deep_tree_left_in_the_uploads_folder_is_removed_by_the_cleanup(team, settings, plant):
    folder = uploads_root() / "left-behind"
    plant(folder / "deep")
    later = time.time() + (settings.MTM_UPLOAD_GRACE_HOURS + 1) * 3600
    assert cleanup_uploads(now=later) == [str(folder)]
    assert not folder.exists()


def test_a_deep_tree_planted_while_a_too_large_upload_streams_goes_with_it(team, plant):
    with pytest.raises(DatasetError) as refused:
        store_upload(PlantingWhileStreamed(QA_BYTES, plant), "qa.jsonl", max_bytes=10)
    assert refused.value.problems[0].code == "dataset_too_large"
    assert os.listdir(uploads_root()) == []


def test_a_deep_tree_planted_while_an_upload_over_the_quota_streams_goes_with_it(team, plant):
    PortalSettings.objects.update(upload_quota_bytes=10)
    with pytest.raises(DatasetError) as refused:
        receive_upload(Actor.command_line(team["mallory"]), PlantingWhileStreamed(QA_BYTES, plant), "qa.jsonl")
    assert refused.value.problems[0].code == QUOTA_EXCEEDED
    assert os.listdir(uploads_root()) == [] and not Upload.objects.exists()


def test_a_deep_tree_planted_beside_a_reused_upload_goes_with_the_second_copy(team, plant):
    actor = Actor.command_line(team["mallory"])
    first = receive_upload(actor, SimpleUploadedFile("qa.jsonl", QA_BYTES), "qa.jsonl")
    again = receive_upload(actor, PlantingWhileStreamed(QA_BYTES, plant), "qa-again.jsonl")
    assert again.reused and again.path == first.path
    assert os.listdir(uploads_root()) == [first.path.parent.name] and first.path.read_bytes() == QA_BYTES


# --- runs -----------------------------------------------------------------------------------------------------------


def swapped_run_folder(team, model_name: str, snapshot: Path, status: str) -> TrainingRun:
    """A run whose folder the worker made (and recorded), then moved away by the member, who put her own folder at
    its path."""
    project = create_project(actor=as_(team["mallory"]), data=fields(team["root"], model_name))
    run = run_of(project, team["mallory"], status=status, snapshot=snapshot)
    os.close(create_run_folder(run))
    folder = Path(run.run_folder)
    folder.rename(folder.with_name("moved-away"))
    folder.mkdir()
    return run


def test_a_deep_tree_in_a_runs_snapshot_folder_no_longer_crashes_the_validate_stage(
    team, tiny_llama_in_cache, settings, tmp_path, plant
):
    settings.VAR_DIR = tmp_path / "var"
    name, snapshot = tiny_llama_in_cache
    run = swapped_run_folder(team, name, snapshot, RunStatus.TRAINING)
    snapshots = stages.run_dir(run.pk) / "dataset"
    plant(snapshots)  # the stage drops the dataset snapshot whatever happens
    stages.validate_stage(run.pk)
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "validate", "run_folder_changed")
    assert str(run.run_folder) in run.error_message and not snapshots.exists()


def test_a_deep_tree_where_the_dataset_snapshot_goes_is_cleared_first(
    team, tiny_llama_in_cache, settings, tmp_path, plant
):
    settings.VAR_DIR = tmp_path / "var"
    name, snapshot = tiny_llama_in_cache
    project = create_project(actor=as_(team["mallory"]), data=fields(team["root"], name))
    run = run_of(project, team["mallory"], status=RunStatus.TRAINING, snapshot=snapshot)
    work = stages.run_dir(run.pk)
    plant(work / "dataset")
    made = snapshot_dataset(run, work)
    assert made == work / "dataset" / "qa.jsonl" and os.listdir(work / "dataset") == ["qa.jsonl"]
    assert made.read_bytes() == (team["root"] / "datasets" / "qa.jsonl").read_bytes()


def test_a_deep_tree_in_a_staging_folder_is_removed_by_descriptor(tmp_path, plant):
    run_folder = tmp_path / "run-1"
    run_folder.mkdir()
    fd = os.open(run_folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        staging = make_staging(fd)
        plant(run_folder / staging / "checkpoint-1")
        remove_tree(fd, staging)
    finally:
        os.close(fd)
    assert os.listdir(run_folder) == []


def test_a_run_folder_past_the_entry_bound_fails_validation_naming_it(team, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    project = create_project(actor=as_(team["mallory"]), data=fields(team["root"], name))
    run = run_of(project, team["mallory"], status=RunStatus.VALIDATING, snapshot=snapshot)
    fd = create_run_folder(run)
    folder = Path(run.run_folder)
    try:
        fill(folder / "junk", folder_scan.MAX_ENTRIES + 1)
        report = validate_output(folder, "Hello", base_model_path=str(snapshot), folder_fd=fd)
    finally:
        os.close(fd)
    files, json_check = report.checks[0], report.checks[1]
    assert not report.passed and not files.passed and not json_check.passed
    limit = folder_scan.MAX_ENTRIES
    assert f"{folder} holds more than {limit} files and folders (the walk stopped in {folder}/junk)" in files.detail
    assert "start a fresh run" in files.detail and f"holds more than {limit} files" in json_check.detail


# --- links, and the bound ---------------------------------------------------------------------------------------------


def test_links_in_a_removed_tree_are_removed_as_links_and_what_they_lead_to_stays(team, plant):
    alice = Actor.command_line(team["alice"])
    mallory = Actor.command_line(team["mallory"])
    alices = receive_upload(alice, SimpleUploadedFile("qa.jsonl", QA_BYTES), "qa.jsonl").path
    mallorys = receive_upload(mallory, SimpleUploadedFile("m.jsonl", QA_BYTES + b"\n"), "m.jsonl").path
    deep = plant(mallorys.parent / "deep")
    os.symlink(alices.parent, deepest(deep) / "to-alices-folder", target_is_directory=True)
    os.symlink(alices, mallorys.parent / "to-alices-file")
    os.symlink(team["root"] / "nowhere", mallorys.parent / "dangling")
    assert discard_upload(mallorys, actor=mallory) is True
    assert not mallorys.parent.exists()
    assert alices.read_bytes() == QA_BYTES and os.listdir(alices.parent) == ["qa.jsonl"]


def test_a_folder_swapped_for_a_link_is_removed_as_the_link(tmp_path):
    target = tmp_path / "someone-elses"
    fill(target, 3)
    (tmp_path / "portal").mkdir()
    os.symlink(target, tmp_path / "portal" / "upload-folder", target_is_directory=True)
    remove_path(tmp_path / "portal" / "upload-folder")
    assert os.listdir(tmp_path / "portal") == [] and sorted(os.listdir(target)) == ["0", "1", "2"]


def test_a_removal_past_the_bound_stops_and_says_what_is_left(team, settings, caplog):
    folder = uploads_root() / "left-behind"
    fill(folder / "junk", tree_removal.MAX_ENTRIES + 1)
    with pytest.raises(RemovalStopped) as stopped:
        remove_path(folder)
    assert str(stopped.value) == (
        f"{folder} was not removed: it holds more than {tree_removal.MAX_ENTRIES} files and folders, more than "
        f"anything the portal writes, so the removal stopped in {folder}/junk and what it had not "
        f"reached is still in place. Staff can remove it by hand: rm -rf -- {folder}"
    )
    # The periodic cleanup, which tolerates what it cannot remove, logs it and goes on.
    later = time.time() + (settings.MTM_UPLOAD_GRACE_HOURS + 1) * 3600
    with caplog.at_level(logging.WARNING, logger="mtm.shared.tree_removal"):
        cleanup_uploads(now=later)
    assert (folder / "junk").is_dir()
    assert [r.getMessage() for r in caplog.records if r.name == "mtm.shared.tree_removal"] == [str(stopped.value)]
