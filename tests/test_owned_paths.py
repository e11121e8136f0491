"""Owned paths: a member may not train into another member's output directory or the portal's folders, may not
swap a folder or dataset for a link between the checks and training, and may not use another member's upload.
Each test replays an attack as a member would and checks it is refused and that nothing of the other's changed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from models_registry.models import ModelOverride, PortalSettings
from mtm.audit import Actor
from projects.models import RunStatus, TrainingProject, TrainingRun, Upload
from projects.runs import stages
from projects.runs.paths import open_dir_nofollow
from projects.runs.services import RunRefused, start_run
from projects.services import ProjectInvalid, create_project, update_project
from projects.trainer.outputs import MANIFEST_NAME
from tests.api_client import call, make_user_token
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, write_jsonl


def fields(root: Path, model_name: str, **changes) -> dict:
    return {
        "name": "p",
        "model_name": model_name,
        "dataset_path": str(root / "datasets" / "qa.jsonl"),
        "output_directory": str(root / "outputs" / "p"),
        "method": "lora",
        "hyperparameters": {**FAST_HYPERPARAMETERS, "max_steps": 2},
        **changes,
    }


def alices_trained_project(team, model_name: str) -> TrainingProject:
    """Alice's project with what a finished run leaves: a checkpoint and a manifest."""
    out = team["root"] / "outputs" / "alice"
    project = create_project(
        actor=Actor.command_line(team["alice"]),
        data=fields(team["root"], model_name, name="alice's", output_directory=str(out)),
    )
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (out / MANIFEST_NAME).write_text('{"format": 1}')
    return project


def refused_output(owner, data) -> list:
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=Actor.command_line(owner), data=data)
    return refused.value.check.errors["output_directory"]


# --- output directories at save ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["", "merged", "checkpoint-4"])
def test_a_member_cannot_save_into_another_members_output_directory(team, tiny_llama_in_cache, where):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    target = os.path.join(alice.output_directory, where) if where else alice.output_directory
    [problem] = refused_output(team["mallory"], fields(team["root"], tiny_llama_in_cache[0], output_directory=target))
    assert problem.code == "output_directory_owned"
    assert "project 'alice's' (owner alice)" in problem.message and "Choose a new folder" in problem.hint
    assert TrainingProject.objects.filter(owner=team["mallory"]).count() == 0


def test_a_member_cannot_save_a_folder_that_contains_another_members_output(team, tiny_llama_in_cache):
    alices_trained_project(team, tiny_llama_in_cache[0])
    data = fields(team["root"], tiny_llama_in_cache[0], output_directory=str(team["root"] / "outputs"))
    refused = refused_output(team["mallory"], data)
    [problem] = [p for p in refused if p.code != "output_directory_reserved"]  # the root itself is reserved too
    assert problem.code == "output_directory_owned" and " contains the output directory " in problem.message


def test_a_link_to_another_members_output_is_refused_too(team, tiny_llama_in_cache):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    link = team["root"] / "outputs" / "mine"
    link.symlink_to(alice.output_directory)
    [problem] = refused_output(
        team["mallory"], fields(team["root"], tiny_llama_in_cache[0], output_directory=str(link))
    )
    assert problem.code == "output_directory_owned"


def test_the_owner_and_staff_may_nest_or_share_their_projects_folders(team, tiny_llama_in_cache):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    nested = fields(team["root"], tiny_llama_in_cache[0], output_directory=alice.output_directory + "/second")
    assert create_project(actor=Actor.command_line(team["alice"]), data=nested).owner == team["alice"]
    shared = fields(team["root"], tiny_llama_in_cache[0], output_directory=alice.output_directory)
    assert create_project(actor=Actor.command_line(team["staff"]), data=shared).owner == team["staff"]


def test_editing_a_project_onto_another_members_folder_is_refused(team, tiny_llama_in_cache):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    mine = create_project(actor=Actor.command_line(team["mallory"]), data=fields(team["root"], tiny_llama_in_cache[0]))
    with pytest.raises(ProjectInvalid) as refused:
        update_project(
            mine, {"output_directory": alice.output_directory + "/merged"}, actor=Actor.command_line(team["mallory"])
        )
    assert [p.code for p in refused.value.check.errors["output_directory"]] == ["output_directory_owned"]
    mine.refresh_from_db()
    assert mine.output_directory == str(team["root"] / "outputs" / "p")


def test_the_portals_own_folders_are_refused_for_everyone(team, tiny_llama_in_cache, settings, tmp_path):
    model_name, snapshot = tiny_llama_in_cache
    override = tmp_path / "outputs" / "override-model"
    override.mkdir()
    ModelOverride.objects.create(model_name="org/override", path=str(override))
    settings.VAR_DIR = tmp_path / "outputs" / "var"
    settings.VAR_DIR.mkdir()
    cache = Path(PortalSettings.load().model_cache_path)
    PortalSettings.objects.filter(pk=1).update(allowed_output_roots=[str(tmp_path)])
    cases = {
        str(cache / "models--x"): "the model cache",
        str(override / "out"): "override for 'org/override'",
        str(settings.MEDIA_ROOT / "datasets"): "media folder",
        str(settings.VAR_DIR): "var/ folder",
        str(tmp_path / "outputs"): "var/ folder",  # contains var/
        str(settings.VAR_DIR / "runs" / "1"): "run folders",
    }
    for path, label in cases.items():
        problems = refused_output(team["staff"], fields(team["root"], model_name, output_directory=path))
        assert "output_directory_reserved" in [p.code for p in problems], path
        assert any(label in p.message for p in problems), (path, problems)
    fresh = fields(team["root"], model_name, output_directory=str(settings.VAR_DIR / "outputs" / "new"))
    assert create_project(
        actor=Actor.command_line(team["mallory"]), data=fresh
    )  # a new folder of its own inside var/ is fine


def test_a_folder_holding_a_model_of_no_project_is_refused_to_members(team, tiny_llama_in_cache):
    leftover = team["root"] / "outputs" / "leftover"
    (leftover / "merged").mkdir(parents=True)
    (leftover / MANIFEST_NAME).write_text("{}")
    for target in (leftover, leftover / "merged"):
        data = fields(team["root"], tiny_llama_in_cache[0], output_directory=str(target))
        [problem] = refused_output(team["mallory"], data)
        assert problem.code == "output_directory_claimed" and "belongs to no project" in problem.message
    assert create_project(
        actor=Actor.command_line(team["staff"]),
        data=fields(team["root"], tiny_llama_in_cache[0], output_directory=str(leftover)),
    )


def test_a_run_marker_names_its_project(team, tiny_llama_in_cache):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    run = TrainingRun.objects.create(project=alice, run_folder=alice.output_directory)
    elsewhere = team["root"] / "outputs" / "marked"
    elsewhere.mkdir()
    (elsewhere / ".mtm-run").write_text(f"{run.pk}\n")
    data = fields(team["root"], tiny_llama_in_cache[0], output_directory=str(elsewhere))
    [problem] = refused_output(team["mallory"], data)
    assert problem.code == "output_directory_owned" and "alice's" in problem.message


def test_the_api_refuses_another_members_folder_with_the_field_named(client, team, tiny_llama_in_cache):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    _, token = make_user_token("eve")
    body = fields(team["root"], tiny_llama_in_cache[0], output_directory=alice.output_directory + "/merged")
    resp = call(client, "post", "/projects", body, token)
    assert resp.status_code == 422
    [error] = resp.json()["errors"]
    assert (error["field"], error["code"]) == ("output_directory", "output_directory_owned")


# --- output directories at start --------------------------------------------------------------------------------


def test_start_refuses_a_project_saved_onto_another_members_folder(team, tiny_llama_in_cache):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    TrainingRun.objects.create(project=alice, run_folder=alice.output_directory)  # queued
    # Saved before the rule existed (or through a folder that has since become a link).
    sneaky = TrainingProject.objects.create(
        owner=team["mallory"], **{**fields(team["root"], "x/y"), "output_directory": alice.output_directory + "/m"}
    )
    with pytest.raises(RunRefused) as refused:
        start_run(sneaky, actor=Actor.command_line(team["mallory"]))
    assert refused.value.problem.code in ("output_directory_busy", "output_directory_owned")
    TrainingRun.objects.filter(project=alice).update(status=RunStatus.SUCCEEDED)
    with pytest.raises(RunRefused) as refused:
        start_run(sneaky, actor=Actor.command_line(team["mallory"]))
    assert refused.value.problem.code == "output_directory_owned"
    assert not sneaky.runs.exists()


def test_start_refuses_a_folder_swapped_for_a_link_to_another_members_output(team, tiny_llama_in_cache):
    alice = alices_trained_project(team, tiny_llama_in_cache[0])
    mine = create_project(actor=Actor.command_line(team["mallory"]), data=fields(team["root"], tiny_llama_in_cache[0]))
    Path(mine.output_directory).symlink_to(alice.output_directory)
    with pytest.raises(RunRefused) as refused:
        start_run(mine, actor=Actor.command_line(team["mallory"]))
    # Her own saved folder is now a link: that is what Start says, naming the folder and where it leads.
    problem = refused.value.problem
    assert problem.code == "output_directory_now_a_link" and alice.output_directory in problem.message


def test_a_queued_run_blocks_a_run_inside_its_folder_even_for_the_same_owner(team, tiny_llama_in_cache):
    first = create_project(actor=Actor.command_line(team["alice"]), data=fields(team["root"], tiny_llama_in_cache[0]))
    inner = fields(team["root"], tiny_llama_in_cache[0], name="inner", output_directory=first.output_directory + "/m")
    second = create_project(actor=Actor.command_line(team["alice"]), data=inner)
    busy = TrainingRun.objects.create(project=first, run_folder=first.output_directory)
    with pytest.raises(RunRefused) as refused:
        start_run(second, actor=Actor.command_line(team["alice"]))
    assert refused.value.problem.code == "output_directory_busy" and f"Run {busy.pk}" in refused.value.problem.message


# --- paths swapped between the checks and training ---------------------------------------------------------------


def resolving_run(project: TrainingProject, snapshot: Path, user) -> TrainingRun:
    return TrainingRun.objects.create(
        project=project,
        started_by=user,
        status=RunStatus.RESOLVING,
        run_folder=os.path.realpath(project.output_directory),
        resolved_source="cache",
        resolved_path=str(snapshot),
    )


def test_an_output_folder_swapped_for_a_link_is_not_written_through(team, tiny_llama_in_cache, tmp_path):
    name, snapshot = tiny_llama_in_cache
    mine = create_project(actor=Actor.command_line(team["mallory"]), data=fields(team["root"], name))
    run = resolving_run(mine, snapshot, team["mallory"])
    outside = tmp_path / "outside"
    outside.mkdir()
    Path(mine.output_directory).symlink_to(outside)  # after the save and start checks
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "output_directory_changed")
    assert "replaced by a link" in run.error_message and list(outside.iterdir()) == []


def test_a_link_planted_after_the_recheck_is_not_followed(team, tmp_path):
    real = tmp_path / "outputs" / "a"
    real.mkdir()
    (real / "b").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "outside").mkdir()
    with pytest.raises(OSError) as failed:
        open_dir_nofollow(str(real / "b" / "c"), create=True)
    assert failed.value.errno in (40, 20)  # ELOOP or ENOTDIR
    assert list((tmp_path / "outside").iterdir()) == []
    fd = open_dir_nofollow(str(real / "new" / "deeper"), create=True)
    os.close(fd)
    assert (real / "new" / "deeper").is_dir()


def test_a_dataset_swapped_for_a_link_to_a_secret_is_never_read(team, tiny_llama_in_cache, tmp_path):
    name, snapshot = tiny_llama_in_cache
    mine = create_project(actor=Actor.command_line(team["mallory"]), data=fields(team["root"], name))
    run = resolving_run(mine, snapshot, team["mallory"])
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FIRST-LINE\nmore\n")
    Path(mine.dataset_path).unlink()
    Path(mine.dataset_path).symlink_to(secret)
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.stage_failed == "train"
    everything = " ".join([run.error_message, run.error_hint, run.log_tail])
    assert "TOP-SECRET" not in everything and run.error_code == "outside_allowed_roots"
    assert not Path(mine.output_directory).exists()


def test_a_dataset_swapped_for_a_link_to_another_file_in_the_roots_is_refused(team, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    other = write_jsonl(team["root"] / "datasets" / "alices.jsonl", [{"text": "ALICE-PRIVATE-ROW"}] * 4)
    mine = create_project(actor=Actor.command_line(team["mallory"]), data=fields(team["root"], name))
    run = resolving_run(mine, snapshot, team["mallory"])
    Path(mine.dataset_path).unlink()
    Path(mine.dataset_path).symlink_to(other)
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert run.error_code == "dataset_changed" and "It was not read." in run.error_message
    assert "ALICE-PRIVATE-ROW" not in run.error_message + run.log_tail


# --- uploads ----------------------------------------------------------------------------------------------------


def upload_via_api(client: Client, token: str, body: bytes, name: str = "mine.jsonl"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        "/api/v1/datasets",
        {"file": SimpleUploadedFile(name, body)},
        secure=True,
        headers={"Authorization": f"Bearer {token}"},
    )


QA_BYTES = b"".join(f'{{"prompt": "q{i}", "completion": "a{i}"}}\n'.encode() for i in range(8))


def test_a_member_cannot_reference_another_members_upload(client, portal_roots, tiny_llama_in_cache):
    alice, alice_token = make_user_token("alice")
    _, mallory_token = make_user_token("mallory")
    _, staff_token = make_user_token("boss", staff=True)
    resp = upload_via_api(client, alice_token, QA_BYTES)
    assert resp.status_code == 200, resp.content
    path = resp.json()["dataset_path"]
    assert Upload.objects.get(path=path).owner == alice
    body = fields(portal_roots, tiny_llama_in_cache[0], dataset_path=path)
    resp = call(client, "post", "/projects", body, mallory_token)
    assert resp.status_code == 422
    [error] = resp.json()["errors"]
    assert (error["field"], error["code"]) == ("dataset_path", "upload_not_yours")
    assert "uploaded by alice" in error["message"] and Path(path).is_file()
    assert call(client, "post", "/projects", body, alice_token).status_code == 201
    staff_body = {**body, "output_directory": str(portal_roots / "outputs" / "staff")}
    assert call(client, "post", "/projects", staff_body, staff_token).status_code == 201


def test_a_file_in_the_uploads_folder_that_nobody_uploaded_is_refused(team, tiny_llama_in_cache, settings):
    planted = write_jsonl(Path(settings.MEDIA_ROOT) / "datasets" / "abc" / "d.jsonl", QA_ROWS)
    data = fields(team["root"], tiny_llama_in_cache[0], dataset_path=str(planted))
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=Actor.command_line(team["mallory"]), data=data)
    assert [p.code for p in refused.value.check.errors["dataset_path"]] == ["upload_unknown"]


def test_the_upload_quota_refuses_clearly_and_keeps_nothing(client, portal_roots, settings):
    PortalSettings.objects.filter(pk=1).update(upload_quota_bytes=len(QA_BYTES) + 10)
    _, token = make_user_token("mallory")
    assert upload_via_api(client, token, QA_BYTES).status_code == 200
    resp = upload_via_api(client, token, QA_BYTES, "again.jsonl")
    assert resp.status_code == 422
    [error] = resp.json()["errors"]
    assert error["code"] == "upload_quota_exceeded" and "over the quota" in error["message"]
    assert "ask staff to raise the quota" in error["hint"]
    assert Upload.objects.count() == 1
    assert len(list((Path(settings.MEDIA_ROOT) / "datasets").iterdir())) == 1


def test_an_invalid_upload_through_the_page_is_deleted(portal_roots, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.clients import secure_client

    page = secure_client(User.objects.create_user("mallory"))
    bad = SimpleUploadedFile("bad.jsonl", b'{"prompt": "a", "completion": 7}\n')
    resp = page.post("/projects/upload-dataset/", {"dataset_file": bad}, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200 and b"the upload was not kept" in resp.content
    uploads = Path(settings.MEDIA_ROOT) / "datasets"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert Upload.objects.count() == 0


def test_unreferenced_uploads_are_removed_after_the_grace_period(team, tiny_llama_in_cache, settings):
    import time

    from django.core.files.uploadedfile import SimpleUploadedFile

    from projects.datasets.tasks import cleanup_uploads
    from projects.datasets.uploads import receive_upload

    used = receive_upload(
        Actor.command_line(team["mallory"]), SimpleUploadedFile("used.jsonl", QA_BYTES), "used.jsonl"
    ).path
    # Other bytes: the same bytes again would be the used upload itself (an owner's identical upload is reused).
    unused = receive_upload(
        Actor.command_line(team["mallory"]), SimpleUploadedFile("unused.jsonl", QA_BYTES + QA_BYTES), "unused.jsonl"
    ).path
    create_project(
        actor=Actor.command_line(team["mallory"]),
        data=fields(team["root"], tiny_llama_in_cache[0], dataset_path=str(used)),
    )
    stray = Path(settings.MEDIA_ROOT) / "datasets" / "cut-short"
    stray.mkdir()
    assert cleanup_uploads() == 0  # everything is younger than the grace period
    old = time.time() - (settings.MTM_UPLOAD_GRACE_HOURS + 1) * 3600
    Upload.objects.update(created_at=datetime.fromtimestamp(old, tz=UTC))
    os.utime(stray, (old, old))
    assert cleanup_uploads() == 2
    assert used.is_file() and not unused.exists() and not stray.exists()
    assert list(Upload.objects.values_list("path", flat=True)) == [str(used)]


def test_the_cleanup_runs_on_a_schedule(settings):
    entries = [e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()]
    assert "projects.cleanup_uploads" in entries


def test_staff_set_the_quota_on_the_settings_page(db):
    from tests.clients import secure_client

    page = secure_client(User.objects.create_user("boss", is_staff=True))
    resp = page.post("/settings/", {"model_cache_path": "", "upload_quota_bytes": "12345"})
    assert resp.status_code == 302, resp.content[-2000:]
    assert PortalSettings.load().upload_quota_bytes == 12345


def test_staff_set_the_quota_through_the_api_and_members_cannot(client, db):
    _, staff_token = make_user_token("boss", staff=True)
    _, member_token = make_user_token("mallory")
    assert call(client, "patch", "/settings", {"upload_quota_bytes": 99}, member_token).status_code == 403
    resp = call(client, "patch", "/settings", {"upload_quota_bytes": 4096}, staff_token)
    assert resp.status_code == 200 and resp.json()["upload_quota_bytes"] == 4096
    assert PortalSettings.load().upload_quota_bytes == 4096
    assert call(client, "patch", "/settings", {"upload_quota_bytes": -1}, staff_token).status_code == 422


@pytest.mark.slow
def test_an_output_folder_swapped_for_a_link_during_training_stops_the_run(
    team, tiny_llama_in_cache, transactional_db, start_worker, tmp_path
):
    from tests.pipeline_helpers import wait_for_end

    start_worker().wait_ready()
    data = fields(team["root"], tiny_llama_in_cache[0], method="full")
    data["hyperparameters"] = {**FAST_HYPERPARAMETERS, "max_steps": 2000, "save_steps": 3, "learning_rate": 0.001}
    mine = create_project(actor=Actor.command_line(team["mallory"]), data=data)
    run = wait_for_end(
        start_run(mine, actor=Actor.command_line(team["mallory"])).pk, until=lambda r: r.progress.get("step", 0) >= 2
    )
    outside = tmp_path / "outside"
    Path(mine.output_directory).rename(outside)  # keeps the marker, so only the link gives the swap away
    Path(mine.output_directory).symlink_to(outside)
    run = wait_for_end(run.pk, timeout=120)
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "train", "output_directory_changed")
    assert "replaced by a link" in run.error_message
