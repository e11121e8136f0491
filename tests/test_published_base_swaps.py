"""A model published in the portal as another member's base, swapped by someone who can write in the publishing
project's output directory: the published run folder renamed away and a copy of hers (with a marker in its config)
put at its path after the resolver checked it. The worker opens the published folder against the identity its run
recorded and hands the trainer and the validation child a path through the descriptor it holds, so a swap before
that open fails the stage saying so, and a swap after it changes nothing the children read. Records and messages
still name the published path.

Alice's published run is a row whose folder holds the real tiny Llama saved as a full fine-tune (tests/test_publish);
the swaps are made between the calls, in the order the worker makes them."""

# ruff: noqa: F811  (the fixtures imported from tests.test_publish are the tests' parameters)
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from models_registry.lookup import resolve_model
from models_registry.models import PublishedModel
from mtm.shared.claims import identity_of
from projects.models import RunStatus, TrainingRun
from projects.runs import stages
from projects.runs.base_model_folder import open_base_model
from projects.runs.records import run_folder
from projects.trainer.outputs import MANIFEST_NAME
from projects.trainer.spec import TrainerSpec, read_spec, write_spec
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, copy_dataset_as_resolve_does
from tests.test_publish import api, project_of, team  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

NAME = "team/support-bot"
MARKER = "planted_by"
TWO_STEPS = {**FAST_HYPERPARAMETERS, "max_steps": 2, "save_steps": 100, "max_seq_length": 32}


def published(team, api) -> str:
    """Alice's run published as NAME, checked as the resolve stage checks it; the path it resolves to."""
    assert api("alice", team["run"], NAME).status_code == 201
    resolution = resolve_model(NAME)
    assert (resolution.valid, resolution.source) == (True, "portal"), resolution.errors
    return resolution.path


def swap_for_her_copy(path: str) -> Path:
    """The swap: the published folder renamed away, a copy with a marker in its config put at its path."""
    folder = Path(path)
    folder.rename(folder.with_name(folder.name + ".orig"))
    shutil.copytree(folder.with_name(folder.name + ".orig"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, MARKER: "mallory"}))
    return folder


def members_run(team, path: str, *, method: str = "full", status: str = RunStatus.RESOLVING, **project) -> TrainingRun:
    """A run of another member's project on NAME, as the resolve stage leaves it: resolved to the published path."""
    owner = team["mallory"]
    project = project_of(team, owner, "on-top", model_name=NAME, method=method, hyperparameters=TWO_STEPS, **project)
    run = TrainingRun.objects.create(
        project=project, started_by=owner, status=status, resolved_source="portal", resolved_path=path
    )
    run.run_folder = run_folder(project.output_directory, run.pk)
    run.save(update_fields=["run_folder"])
    if status == RunStatus.RESOLVING:
        copy_dataset_as_resolve_does(run)
    return run


def failed(run: TrainingRun, stage: str, code: str) -> TrainingRun:
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, stage, code), (
        run.error_message,
        run.log_tail[-2000:],
    )
    return run


def test_a_published_base_swapped_after_the_resolve_check_is_not_trained_from(team, api):
    path = published(team, api)
    run = members_run(team, path)
    swap_for_her_copy(path)

    assert stages.train_stage(run.pk) is False
    run = failed(run, "train", "run_folder_changed")
    assert path in run.error_message and "not the folder the worker created" in run.error_message
    assert run.error_hint
    out = Path(run.run_folder)
    assert not (out / "config.json").exists() and not (out / MANIFEST_NAME).exists()  # nothing trained


def test_the_path_handed_to_the_children_still_reaches_the_checked_folder_after_a_swap(team, api, tmp_path):
    path = published(team, api)
    run = members_run(team, path)
    with open_base_model(run) as base:  # the worker's check: the folder alice's run made
        swap_for_her_copy(path)
        for read_by in (base.path_for(os.getpid()), base.path_for()):  # the trainer's, the validation child's
            assert MARKER not in json.loads(Path(read_by, "config.json").read_text())
        written = TrainerSpec(model_path=base.path_for(os.getpid()), model_shown=path, **_spec_rest(run))
        spec = read_spec(write_spec(written, tmp_path / "spec.json"))
        assert (str(spec.model_path), spec.model_named) == (base.path_for(os.getpid()), path)
    assert MARKER in json.loads(Path(path, "config.json").read_text())  # her copy is what the path reaches now


def _spec_rest(run: TrainingRun) -> dict:
    return {"model_name": NAME, "dataset_path": run.project.dataset_path, "output_dir": run.run_folder}


def test_a_published_base_swapped_before_validation_is_not_read(team, api):
    """The run trained on the published folder; before validation loads the base, the folder is swapped."""
    path = published(team, api)
    run = members_run(team, path, status=RunStatus.TRAINING, validation_prompt="Say hello:")
    shutil.copytree(path, run.run_folder)  # what a full fine-tune on it leaves, recorded as the worker made it
    Path(run.run_folder, MANIFEST_NAME).write_text(
        json.dumps({"format": 1, "layout": {"model_dir": ".", "adapter_dir": None}, "finished_at": "2026-12-01"})
    )
    TrainingRun.objects.filter(pk=run.pk).update(run_folder_identity=identity_of(run.run_folder))
    swap_for_her_copy(path)

    stages.validate_stage(run.pk)
    run = failed(run, "validate", "run_folder_changed")
    assert path in run.error_message and run.validation in ({}, None)


def test_a_base_unpublished_after_the_resolve_check_is_not_trained_from(team, api):
    path = published(team, api)
    run = members_run(team, path)
    PublishedModel.objects.filter(model_name=NAME).delete()

    assert stages.train_stage(run.pk) is False
    run = failed(run, "train", "base_model_unpublished")
    assert f"'{NAME}' is no longer published from {path}" in run.error_message


@pytest.mark.slow
def test_a_run_on_a_published_base_trains_and_validates_through_the_held_folder(team, api):
    """LoRA on the published folder, for real: the trainer (a child of the worker) and the validation child load
    the base through the held descriptor; the manifest and the adapter name the published path."""
    path = published(team, api)
    run = members_run(team, path, method="lora", validation_prompt="Say hello:")
    assert stages.train_stage(run.pk) is True, TrainingRun.objects.get(pk=run.pk).log_tail[-3000:]
    out = Path(run.run_folder)
    assert json.loads((out / MANIFEST_NAME).read_text())["base_model"]["path"] == path
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == path
    assert "/proc/" not in "".join(p.read_text() for p in out.glob("*.json"))

    stages.validate_stage(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.validation)
    assert "/proc/" not in json.dumps(run.validation)
