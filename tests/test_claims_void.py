"""A claim that became a link is void: a member with a shell who swaps a saved output folder, run folder, dataset
file, upload or override folder for a link (or for another folder) claims nothing through it. Every other member
still saves and starts; the swapping member's own project is told, naming the folder, what changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_registry.override_services import create_override
from mtm.audit import Actor
from projects.datasets.uploads import cleanup_uploads, receive_upload
from projects.models import RunStatus, TrainingProject, TrainingRun, Upload
from projects.runs.services import RunRefused, start_run
from projects.services import ProjectInvalid, create_project, update_project
from tests.api_client import call, make_user_token
from tests.pipeline_helpers import QA_ROWS, write_jsonl
from tests.test_owned_paths import QA_BYTES, fields


def as_(user) -> Actor:
    return Actor.command_line(user)


def project_in(team, who: str, model: str, folder: Path, **changes) -> TrainingProject:
    """`who`'s project training into `folder` (made first, as a run would have: the save records which folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = fields(team["root"], model, name=f"{who}'s", output_directory=str(folder), **changes)
    return create_project(actor=as_(team[who]), data=data)


def swap_for_link(folder: Path, target: Path) -> None:
    """What a member does with a shell: the saved folder goes, a link to `target` takes its name."""
    folder.rename(folder.with_name(folder.name + "-old"))
    folder.symlink_to(target, target_is_directory=True)


def assert_others_unaffected(team, model: str, alices: TrainingProject) -> None:
    outputs = team["root"] / "outputs"
    update_project(alices, {"description": "still mine"}, actor=as_(team["alice"]))
    assert start_run(alices, actor=as_(team["alice"])).status == RunStatus.QUEUED
    fresh = create_project(
        actor=as_(team["alice"]), data=fields(team["root"], model, name="new", output_directory=str(outputs / "new"))
    )
    assert fresh.output_directory == str(outputs / "new")


# --- a saved output folder swapped for a link -------------------------------------------------------------------


@pytest.mark.parametrize("existed", [True, False], ids=["folder-there-at-save", "no-identity-recorded"])
def test_an_output_folder_swapped_for_a_link_to_the_root_claims_nothing(team, tiny_llama_in_cache, existed):
    model = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    alices = project_in(team, "alice", model, outputs / "alice")
    if existed:
        project_in(team, "mallory", model, outputs / "mallory-out")
    else:  # saved before the folder was made (or before identities were recorded): only its path is known
        data = fields(team["root"], model, name="m", output_directory=str(outputs / "mallory-out"))
        create_project(actor=as_(team["mallory"]), data=data)
        (outputs / "mallory-out").mkdir()
    swap_for_link(outputs / "mallory-out", outputs)
    assert_others_unaffected(team, model, alices)


def test_each_save_records_what_stood_at_the_path(team, tiny_llama_in_cache):
    model = tiny_llama_in_cache[0]
    folder = team["root"] / "outputs" / "alice"
    later = create_project(actor=as_(team["alice"]), data=fields(team["root"], model, output_directory=str(folder)))
    assert later.output_dir_identity == ""  # nothing there yet: a run makes it
    mine = project_in(team, "alice", model, team["root"] / "outputs" / "b")
    stat = os.lstat(mine.output_directory)
    assert mine.output_dir_identity == f"{stat.st_dev}:{stat.st_ino}:{os.statvfs(mine.output_directory).f_fsid:x}"
    upload = receive_upload(as_(team["alice"]), SimpleUploadedFile("a.jsonl", QA_BYTES), "a.jsonl")
    stat = os.lstat(upload.path)
    assert (
        Upload.objects.get(path=str(upload)).identity
        == f"{stat.st_dev}:{stat.st_ino}:{os.statvfs(upload.path).f_fsid:x}"
    )
    override = create_override({"model_name": "team/model", "path": str(folder.parent)}, actor=as_(team["staff"]))
    assert override.path_identity == "{0.st_dev}:{0.st_ino}:{1.f_fsid:x}".format(
        os.stat(folder.parent), os.statvfs(folder.parent)
    )


def test_through_the_api_another_member_still_saves_after_the_swap(client, team, tiny_llama_in_cache):
    model = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    project_in(team, "mallory", model, outputs / "mallory-out")
    swap_for_link(outputs / "mallory-out", outputs)
    _, token = make_user_token("bob")
    body = fields(team["root"], model, name="bob's", output_directory=str(outputs / "bob"))
    resp = call(client, "post", "/projects", body, token)
    assert resp.status_code == 201, resp.content
    resp = call(client, "post", "/projects/validate-output-dir", {"output_directory": str(outputs / "bob2")}, token)
    assert resp.status_code == 200 and resp.json()["valid"] is True, resp.content


def test_the_link_owners_own_save_and_start_name_the_folder(team, tiny_llama_in_cache):
    model = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    project_in(team, "alice", model, outputs / "alice")
    mallorys = project_in(team, "mallory", model, outputs / "mallory-out")
    swap_for_link(outputs / "mallory-out", outputs)
    saved = str(outputs / "mallory-out")
    with pytest.raises(ProjectInvalid) as refused:
        update_project(mallorys, {"description": "x"}, actor=as_(team["mallory"]))
    [problem] = refused.value.check.errors["output_directory"]
    assert problem.code == "output_directory_now_a_link"
    assert saved in problem.message and f"now leads to {outputs}" in problem.message and "link" in problem.hint
    with pytest.raises(RunRefused) as refused_start:
        start_run(mallorys, actor=as_(team["mallory"]))
    assert refused_start.value.problem.code == "output_directory_now_a_link"
    assert saved in refused_start.value.problem.message
    assert not mallorys.runs.exists()
    # The way out the hint gives: a new folder of her own.
    moved = update_project(mallorys, {"output_directory": str(outputs / "m2")}, actor=as_(team["mallory"]))
    assert moved.valid and start_run(mallorys, actor=as_(team["mallory"])).status == RunStatus.QUEUED


def test_a_folder_on_the_saved_path_swapped_for_a_link_claims_nothing(team, tiny_llama_in_cache):
    """The link is one folder up: mallory's saved <root>/m/out now leads to alice's <root>/alice."""
    model = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    alices = project_in(team, "alice", model, outputs / "alice")
    project_in(team, "mallory", model, outputs / "m" / "out")
    (outputs / "m" / "out").rmdir()
    swap_for_link(outputs / "m", outputs)
    (outputs / "out").symlink_to(outputs / "alice")  # so <root>/m/out leads to alice's folder
    update_project(alices, {"description": "mine still"}, actor=as_(team["alice"]))
    assert start_run(alices, actor=as_(team["alice"])).status == RunStatus.QUEUED


# --- a saved output folder swapped for another real folder ------------------------------------------------------


def test_an_output_folder_replaced_by_another_real_folder_claims_nothing(team, tiny_llama_in_cache):
    """Mallory renames her folder away and puts a shared folder holding alice's in its place: the folder at her
    saved path is another inode now, an ancestor of alice's, and claims nothing for mallory."""
    model = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    alices = project_in(team, "alice", model, outputs / "team" / "alice")
    mallorys = project_in(team, "mallory", model, outputs / "m")
    (outputs / "m").rename(outputs / "m-old")
    (outputs / "team").rename(outputs / "m")  # alice's folder now lies inside mallory's saved path
    moved = update_project(alices, {"output_directory": str(outputs / "m" / "alice")}, actor=as_(team["alice"]))
    assert moved.valid and alices.output_directory == str(outputs / "m" / "alice")
    with pytest.raises(RunRefused) as refused:
        start_run(mallorys, actor=as_(team["mallory"]))
    problem = refused.value.problem
    assert problem.code == "output_directory_replaced" and str(outputs / "m") in problem.message
    assert start_run(alices, actor=as_(team["alice"])).status == RunStatus.QUEUED
    # Saving again would take the folder there as hers: it holds alice's output directory, so it is refused.
    with pytest.raises(ProjectInvalid) as refused_save:
        update_project(mallorys, {"description": "mine"}, actor=as_(team["mallory"]))
    assert [p.code for p in refused_save.value.check.errors["output_directory"]] == ["output_directory_owned"]


def test_a_folder_a_run_made_again_is_kept_by_saving_the_project(team, tiny_llama_in_cache):
    model = tiny_llama_in_cache[0]
    folder = team["root"] / "outputs" / "alice"
    alices = project_in(team, "alice", model, folder)
    (folder.parent / "made-again").mkdir()  # made while the old one still stands: surely another inode
    folder.rmdir()  # removed to free space, and made again by the next run
    (folder.parent / "made-again").rename(folder)
    with pytest.raises(RunRefused) as refused:
        start_run(alices, actor=as_(team["alice"]))
    assert (
        refused.value.problem.code == "output_directory_replaced" and "save the project" in refused.value.problem.hint
    )
    check = update_project(alices, {"description": "keep it"}, actor=as_(team["alice"]))
    assert [p.code for p in check.warnings["output_directory"]] == ["output_directory_replaced"]
    assert start_run(alices, actor=as_(team["alice"])).status == RunStatus.QUEUED


# --- run folders -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.TRAINING])
def test_a_run_folder_swapped_for_a_link_to_the_root_claims_nothing(team, tiny_llama_in_cache, status):
    model = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    alices = project_in(team, "alice", model, outputs / "alice")
    mallorys = project_in(team, "mallory", model, outputs / "m")
    run_folder = outputs / "m" / "run-99"
    run_folder.mkdir()
    TrainingRun.objects.create(project=mallorys, status=status, run_folder=str(run_folder))
    swap_for_link(run_folder, outputs)
    assert_others_unaffected(team, model, alices)


# --- uploads ---------------------------------------------------------------------------------------------------


def test_a_dataset_swapped_for_a_link_keeps_no_other_members_upload(team, tiny_llama_in_cache, settings):
    alices_upload = receive_upload(as_(team["alice"]), SimpleUploadedFile("a.jsonl", QA_BYTES), "a.jsonl")
    mine = write_jsonl(team["root"] / "datasets" / "mine.jsonl", QA_ROWS)
    create_project(
        actor=as_(team["mallory"]), data=fields(team["root"], tiny_llama_in_cache[0], dataset_path=str(mine))
    )
    mine.unlink()
    mine.symlink_to(alices_upload.path)  # "used" by mallory's project: kept forever, on alice's quota
    later = time.time() + 3600 * (settings.MTM_UPLOAD_GRACE_HOURS + 1)
    assert str(alices_upload) in cleanup_uploads(now=later)
    assert not Upload.objects.filter(owner=team["alice"]).exists() and not alices_upload.path.exists()


def test_an_upload_swapped_for_a_link_removes_nothing_it_leads_to(team, settings):
    alices = receive_upload(as_(team["alice"]), SimpleUploadedFile("a.jsonl", QA_BYTES), "a.jsonl")
    Upload.objects.filter(path=str(alices)).update(created_at="2100-01-01T00:00:00Z")  # alice's stays young
    mallorys = receive_upload(as_(team["mallory"]), SimpleUploadedFile("m.jsonl", QA_BYTES + b"\n"), "m.jsonl")
    mallorys.path.unlink()
    mallorys.path.symlink_to(alices.path)  # her upload's file is now a link to alice's
    later = time.time() + 3600 * (settings.MTM_UPLOAD_GRACE_HOURS + 1)
    assert cleanup_uploads(now=later) == [str(mallorys)]
    assert alices.path.read_bytes() == QA_BYTES and Upload.objects.filter(owner=team["alice"]).exists()
    assert not os.path.lexists(mallorys.path.parent)


def test_an_upload_whose_file_was_replaced_is_no_ones_upload(team, tiny_llama_in_cache):
    mallorys = receive_upload(as_(team["mallory"]), SimpleUploadedFile("m.jsonl", QA_BYTES), "m.jsonl")
    other = mallorys.path.with_name("other.jsonl")
    other.write_bytes(QA_BYTES)
    other.rename(mallorys.path)  # the same name, another file (another inode) than the one stored
    data = fields(team["root"], tiny_llama_in_cache[0], dataset_path=str(mallorys))
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=as_(team["mallory"]), data=data)
    [problem] = refused.value.check.errors["dataset_path"]
    assert problem.code == "upload_replaced" and str(mallorys) in problem.message


# --- override folders ------------------------------------------------------------------------------------------


def test_an_override_folder_swapped_for_a_link_to_the_root_reserves_nothing_more(team, tiny_llama_in_cache):
    model = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    alices = project_in(team, "alice", model, outputs / "alice")
    shared = outputs / "models" / "team-model"  # staff's override folder, inside a root members write in
    shared.mkdir(parents=True)
    create_override({"model_name": "team/model", "path": str(shared)}, actor=as_(team["staff"]))
    swap_for_link(shared, outputs)
    assert_others_unaffected(team, model, alices)


def test_an_override_saved_as_a_link_still_reserves_the_folder_it_leads_to(team, tiny_llama_in_cache, tmp_path):
    model = tiny_llama_in_cache[0]
    real = team["root"] / "outputs" / "models" / "llama"
    real.mkdir(parents=True)
    link = tmp_path / "llama-link"
    link.symlink_to(real, target_is_directory=True)
    create_override({"model_name": "team/llama", "path": str(link)}, actor=as_(team["staff"]))
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=as_(team["mallory"]), data=fields(team["root"], model, output_directory=str(real / "x")))
    [problem] = refused.value.check.errors["output_directory"]
    assert problem.code == "output_directory_reserved" and "override for 'team/llama'" in problem.message
