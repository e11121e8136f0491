"""Owned paths under attack by a member who can also write in the dataset and output roots on the server: links
swapped between a check and a read, links no one may follow, markers planted in a root, roots claimed whole, the
portal's own code as an output, over-long numbers in an upload and two saves of one folder at once. Each test
replays the attack and checks it is refused with a clear problem, and that nothing of anyone else's leaked."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client

from models_registry.models import ModelOverride, PortalSettings
from mtm.audit import Actor
from mtm.models import ApiToken
from projects.datasets import check_dataset_path, inspect_dataset, load_dataset
from projects.datasets.errors import DatasetError
from projects.datasets.uploads import receive_upload
from projects.models import RunStatus, TrainingProject, Upload
from projects.ownership import lock_claims
from projects.runs import stages
from projects.runs.services import RunRefused, start_run
from projects.services import ProjectInvalid, create_project, update_project
from projects.trainer.outputs import MANIFEST_NAME
from tests.api_client import call, make_user_token
from tests.pipeline_helpers import QA_ROWS, write_jsonl
from tests.test_owned_paths import QA_BYTES, fields, refused_output, resolving_run, upload_via_api

UNREADABLE = "/proc/1/cwd"  # a link the portal may not follow: realpath raises PermissionError


def as_(user) -> Actor:
    return Actor.command_line(user)


def alices_upload(team) -> str:
    return str(receive_upload(as_(team["alice"]), SimpleUploadedFile("a.jsonl", QA_BYTES), "a.jsonl"))


# --- another member's upload, reached through a link -----------------------------------------------------------


def test_a_saved_dataset_swapped_for_a_link_to_another_members_upload_is_refused(team, tiny_llama_in_cache):
    upload = alices_upload(team)
    mine = write_jsonl(team["root"] / "datasets" / "mine.jsonl", QA_ROWS)
    project = create_project(
        actor=as_(team["mallory"]), data=fields(team["root"], tiny_llama_in_cache[0], dataset_path=str(mine))
    )
    mine.unlink()
    mine.symlink_to(upload)
    with pytest.raises(ProjectInvalid) as refused:
        update_project(project, {"dataset_path": upload}, actor=as_(team["mallory"]))
    assert [p.code for p in refused.value.check.errors["dataset_path"]] == ["upload_not_yours"]
    with pytest.raises(RunRefused) as refused_start:  # the saved path now leads to alice's upload
        start_run(project, actor=as_(team["mallory"]))
    assert (
        refused_start.value.problem.code == "upload_not_yours"
        and "uploaded by alice" in refused_start.value.problem.message
    )
    project.refresh_from_db()
    assert project.dataset_path == str(mine) and not project.runs.exists()


def test_a_project_holding_another_members_upload_does_not_start_or_train(team, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    upload = alices_upload(team)
    # Saved before the rule was tight (or set by staff): mallory's project points straight at alice's upload.
    sneaky = TrainingProject.objects.create(owner=team["mallory"], **fields(team["root"], name, dataset_path=upload))
    with pytest.raises(RunRefused) as refused:
        start_run(sneaky, actor=as_(team["mallory"]))
    assert refused.value.problem.code == "upload_not_yours"
    run = resolving_run(sneaky, snapshot, team["mallory"])
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "train", "upload_not_yours")
    assert not Path(sneaky.output_directory).exists()
    assert start_run(sneaky, actor=as_(team["staff"])).status == RunStatus.QUEUED  # staff may use any upload


# --- a dataset swapped for a link between the check and the read ------------------------------------------------


@pytest.mark.parametrize("full", [False, True])
def test_a_dataset_swapped_for_a_link_after_the_check_is_not_read(team, tmp_path, full):
    secret = tmp_path / "secret.csv"
    secret.write_text("user,db_password\nroot,hunter2-SECRET\n")
    flip = write_jsonl(team["root"] / "datasets" / "flip.csv", QA_ROWS)
    located = check_dataset_path(str(flip), [str(team["root"] / "datasets")])
    assert located.valid
    flip.unlink()
    flip.symlink_to(secret)  # the race won: the path is a link when it is read
    report = inspect_dataset(located.path, full=full)
    told = " ".join(f"{p.message} {p.hint}" for p in report.errors + report.warnings) + str(report.preview)
    assert [p.code for p in report.errors] == ["dataset_changed"] and "It was not read." in told
    assert "db_password" not in told and "hunter2" not in told and report.rows == 0
    with pytest.raises(DatasetError) as refused:
        load_dataset(located.path)
    assert refused.value.codes == ["dataset_changed"] and "db_password" not in str(refused.value)


def test_a_folder_on_the_datasets_path_swapped_for_a_link_is_not_followed(team, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "d.jsonl").write_text('{"text": "SECRET-ROW"}\n')
    folder = team["root"] / "datasets" / "team"
    write_jsonl(folder / "d.jsonl", QA_ROWS)
    located = check_dataset_path(str(folder / "d.jsonl"), [str(team["root"] / "datasets")])
    (folder / "d.jsonl").unlink()
    folder.rmdir()
    folder.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    report = inspect_dataset(located.path)
    assert [p.code for p in report.errors] == ["dataset_changed"] and "SECRET-ROW" not in str(
        report.model_dump(mode="json")
    )


# --- links the portal may not follow ----------------------------------------------------------------------------


def test_an_output_folder_swapped_for_an_unfollowable_link_breaks_nobody(team, tiny_llama_in_cache, client):
    name = tiny_llama_in_cache[0]
    m2 = team["root"] / "outputs" / "m2"
    mallorys = create_project(actor=as_(team["mallory"]), data=fields(team["root"], name, output_directory=str(m2)))
    m2.symlink_to(UNREADABLE)  # never created on disk yet: the saved path is now the link
    alices = create_project(
        actor=as_(team["alice"]),
        data=fields(team["root"], name, output_directory=str(team["root"] / "outputs" / "alice")),
    )
    update_project(alices, {"description": "still works"}, actor=as_(team["alice"]))
    assert start_run(alices, actor=as_(team["alice"])).status == RunStatus.QUEUED
    with pytest.raises(RunRefused) as refused:
        start_run(mallorys, actor=as_(team["mallory"]))
    assert refused.value.problem.code in ("output_directory_unresolvable", "output_directory_changed")
    [problem] = refused_output(team["mallory"], fields(team["root"], name, output_directory=str(m2 / "x")))
    assert problem.code == "output_directory_unresolvable" and "cannot be resolved" in problem.message
    _, token = make_user_token("eve")
    resp = call(client, "post", "/projects/validate-output-dir", {"output_directory": str(m2)}, token)
    assert resp.status_code == 200 and resp.json()["valid"] is False
    page = Client()
    page.force_login(team["alice"])
    assert page.get("/projects/check-output-dir/", {"output_directory": str(m2)}, secure=True).status_code == 200
    assert page.get(f"/projects/{alices.pk}/edit/", secure=True).status_code == 200


def test_an_override_at_an_unfollowable_link_breaks_no_save(team, tiny_llama_in_cache):
    ModelOverride.objects.create(model_name="org/proc", path=UNREADABLE)
    data = fields(team["root"], tiny_llama_in_cache[0], output_directory=str(team["root"] / "outputs" / "a"))
    assert create_project(actor=as_(team["alice"]), data=data).pk


def test_a_dataset_path_through_an_unfollowable_link_is_refused_clearly(team, tiny_llama_in_cache):
    link = team["root"] / "datasets" / "proc"
    link.symlink_to(UNREADABLE)
    data = fields(team["root"], tiny_llama_in_cache[0], dataset_path=str(link / "x.jsonl"))
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=as_(team["mallory"]), data=data)
    [problem] = refused.value.check.errors["dataset_path"]
    assert problem.code in ("dataset_unreadable", "outside_allowed_roots")


# --- a whole output root claimed by one member -----------------------------------------------------------------


def test_an_output_root_itself_is_no_ones_output_directory(team, tiny_llama_in_cache):
    name = tiny_llama_in_cache[0]
    second = team["root"] / "outputs2"
    second.mkdir()
    PortalSettings.objects.filter(pk=1).update(allowed_output_roots=[str(team["root"] / "outputs"), str(second)])
    for who in ("mallory", "staff"):
        problems = refused_output(team[who], fields(team["root"], name, output_directory=str(second)))
        assert [p.code for p in problems] == ["output_directory_reserved"]
        assert "allowed output root" in problems[0].message
    assert create_project(
        actor=as_(team["alice"]), data=fields(team["root"], name, output_directory=str(second / "alice"))
    )


def test_a_manifest_planted_in_an_output_root_claims_nothing(team, tiny_llama_in_cache):
    name = tiny_llama_in_cache[0]
    outputs = team["root"] / "outputs"
    alices = create_project(
        actor=as_(team["alice"]), data=fields(team["root"], name, output_directory=str(outputs / "team" / "alice"))
    )
    (outputs / MANIFEST_NAME).write_text("{}")
    (outputs / ".mtm-run").write_text("1\n")
    assert create_project(
        actor=as_(team["alice"]), data=fields(team["root"], name, name="b", output_directory=str(outputs / "b"))
    )
    assert start_run(alices, actor=as_(team["alice"])).status == RunStatus.QUEUED
    # Planted above alice's existing folder, inside the root: her project keeps its folder; a new one is refused.
    (outputs / "team").mkdir()
    (outputs / "team" / MANIFEST_NAME).write_text("{}")
    alices.runs.update(status=RunStatus.SUCCEEDED)
    assert start_run(alices, actor=as_(team["alice"])).status == RunStatus.QUEUED
    [problem] = refused_output(
        team["mallory"], fields(team["root"], name, output_directory=str(outputs / "team" / "m"))
    )
    assert problem.code == "output_directory_claimed"


# --- the portal's code and the dataset roots -------------------------------------------------------------------


def test_the_portals_code_and_the_dataset_roots_are_reserved(team, tiny_llama_in_cache, settings, tmp_path):
    name = tiny_llama_in_cache[0]
    app = tmp_path / "outputs" / "app"
    (app / "mtm").mkdir(parents=True)
    settings.BASE_DIR = app
    settings.VAR_DIR = app / "var"
    PortalSettings.objects.filter(pk=1).update(allowed_output_roots=[str(tmp_path)])
    cases = {
        str(app): "code folder",
        str(app / "mtm"): "code folder",
        str(app / "projects" / "new"): "code folder",
        str(tmp_path / "datasets"): "dataset root",
        str(tmp_path / "datasets" / "out"): "dataset root",
    }
    for path, label in cases.items():
        problems = refused_output(team["staff"], fields(team["root"], name, output_directory=path))
        assert any(p.code == "output_directory_reserved" and label in p.message for p in problems), (path, problems)
    fresh = fields(team["root"], name, output_directory=str(app / "var" / "outputs" / "new"))
    assert create_project(actor=as_(team["mallory"]), data=fresh)  # the default output root is inside var/
    nested = tmp_path / "datasets" / "trained"  # an output root staff chose to put inside a dataset root
    PortalSettings.objects.filter(pk=1).update(allowed_output_roots=[str(tmp_path), str(nested)])
    inside = fields(team["root"], name, name="n", output_directory=str(nested / "mine"))
    assert create_project(actor=as_(team["mallory"]), data=inside)


# --- an integer too long to read --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("big.jsonl", b'{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": ' + b"7" * 5000 + b"}\n"),
        ("big.json", b'[{"prompt": "q", "completion": "a"}, {"prompt": "q", "completion": ' + b"7" * 5000 + b"}]"),
    ],
)
def test_an_upload_with_a_huge_integer_is_a_row_error_and_not_kept(client, portal_roots, settings, name, body):
    _, token = make_user_token("mallory")
    resp = upload_via_api(client, token, body, name)
    assert resp.status_code == 422, resp.content
    [error] = resp.json()["errors"]
    assert error["code"] == "dataset_bad_json" and error["message"].startswith("Row 2 (line ")
    assert "digits" in error["message"]
    uploads = Path(settings.MEDIA_ROOT) / "datasets"
    assert Upload.objects.count() == 0 and (not uploads.exists() or list(uploads.iterdir()) == [])


# --- two saves of one new folder at once ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_members_saving_one_new_folder_at_once_cannot_both_have_it(portal_roots, tiny_llama_in_cache):
    """Mallory's save checks the folder before alice's commits, then waits for the write lock; once it has the
    lock the folder is alice's, and the save is refused."""
    alice = User.objects.create_user("alice")
    mallory = User.objects.create_user("mallory")
    target = str(portal_roots / "outputs" / "race3")
    about_to_write = threading.Event()
    outcome: dict[str, object] = {}

    def signal_before_the_write(execute, sql, params, many, context):
        # SQLite: her transaction's BEGIN waits for alice's write; PostgreSQL: her lock of the claims row does.
        if sql.lstrip().upper().startswith("BEGIN") or "FOR UPDATE" in sql.upper():
            about_to_write.set()  # mallory's checks are done; her transaction now waits for alice's
        return execute(sql, params, many, context)

    def mallory_saves():
        try:
            with connection.execute_wrapper(signal_before_the_write):
                create_project(
                    actor=as_(mallory),
                    data=fields(portal_roots, tiny_llama_in_cache[0], name="m", output_directory=target),
                )
            outcome["saved"] = True
        except ProjectInvalid as exc:
            outcome["refused"] = [p.code for p in exc.check.errors.get("output_directory", [])]
        finally:
            connection.close()

    with transaction.atomic():
        lock_claims()  # as alice's own save through the service would
        TrainingProject.objects.create(owner=alice, **{**fields(portal_roots, "x/y"), "output_directory": target})
        thread = threading.Thread(target=mallory_saves)
        thread.start()
        assert about_to_write.wait(120), "mallory's save never reached its transaction"
    thread.join()
    assert outcome == {"refused": ["output_directory_owned"]}
    assert list(TrainingProject.objects.filter(output_directory=target).values_list("owner__username", flat=True)) == [
        "alice"
    ]


# --- the API's output-directory check --------------------------------------------------------------------------


def test_the_apis_output_directory_check_applies_the_ownership_rule(client, team, tiny_llama_in_cache):
    out = team["root"] / "outputs" / "alice"
    create_project(
        actor=as_(team["alice"]), data=fields(team["root"], tiny_llama_in_cache[0], output_directory=str(out))
    )
    _, mallory_token = make_user_token("mallory2")
    resp = call(
        client, "post", "/projects/validate-output-dir", {"output_directory": str(out / "merged")}, mallory_token
    )
    assert resp.status_code == 200
    assert resp.json()["valid"] is False and [e["code"] for e in resp.json()["errors"]] == ["output_directory_owned"]
    _, raw = ApiToken.issue(team["alice"], "tests")
    resp = call(client, "post", "/projects/validate-output-dir", {"output_directory": str(out / "merged")}, raw)
    assert resp.json()["valid"] is True
