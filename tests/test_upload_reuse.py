"""The same file uploaded twice reuses the first copy, for its owner only: another member's identical bytes are
stored as their own, and a copy shared by two projects survives deleting one of them and a refused re-upload."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from mtm.audit import Actor
from mtm.models import AuditEvent
from projects.datasets.uploads import cleanup_uploads, discard_upload, receive_upload
from projects.models import TrainingProject, Upload
from projects.services import create_project, delete_project
from tests.api_client import call, make_user_token
from tests.test_owned_paths import QA_BYTES, fields, upload_via_api


def folders(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "datasets"
    return sorted(root.iterdir()) if root.exists() else []


def test_the_same_file_uploaded_twice_answers_the_first_copy(client, portal_roots, settings):
    alice, token = make_user_token("alice")
    first = upload_via_api(client, token, QA_BYTES, "qa.jsonl")
    again = upload_via_api(client, token, QA_BYTES, "qa-again.jsonl")
    assert first.status_code == again.status_code == 200, again.content
    assert (first.json()["reused"], again.json()["reused"]) == (False, True)
    path = first.json()["dataset_path"]
    assert again.json()["dataset_path"] == path and Path(path).read_bytes() == QA_BYTES
    assert len(folders(settings)) == 1
    [upload] = Upload.objects.all()
    assert (upload.owner, upload.size_bytes, upload.path) == (alice, len(QA_BYTES), path)
    assert AuditEvent.objects.filter(action="upload.reuse", object_id=str(upload.pk)).count() == 1
    other = upload_via_api(client, token, QA_BYTES + b'{"prompt": "x", "completion": "y"}\n', "qa.jsonl")
    assert other.json()["reused"] is False and other.json()["dataset_path"] != path
    assert len(folders(settings)) == 2


def test_another_members_identical_file_is_never_handed_out(client, portal_roots, tiny_llama_in_cache, settings):
    alice, alice_token = make_user_token("alice")
    mallory, mallory_token = make_user_token("mallory")
    staff, staff_token = make_user_token("boss", staff=True)
    alices = upload_via_api(client, alice_token, QA_BYTES).json()["dataset_path"]
    mallorys = upload_via_api(client, mallory_token, QA_BYTES).json()
    staffs = upload_via_api(client, staff_token, QA_BYTES).json()
    assert mallorys["reused"] is False and staffs["reused"] is False
    assert len({alices, mallorys["dataset_path"], staffs["dataset_path"]}) == 3
    owners = dict(Upload.objects.values_list("path", "owner"))
    assert owners == {alices: alice.pk, mallorys["dataset_path"]: mallory.pk, staffs["dataset_path"]: staff.pk}
    # Mallory's own copy trains; alice's path, which dedup never answered her, is still refused.
    body = fields(portal_roots, tiny_llama_in_cache[0], dataset_path=mallorys["dataset_path"])
    assert call(client, "post", "/projects", body, mallory_token).status_code == 201
    theirs = {**body, "dataset_path": alices, "output_directory": str(portal_roots / "outputs" / "q")}
    resp = call(client, "post", "/projects", theirs, mallory_token)
    assert resp.status_code == 422 and resp.json()["errors"][0]["code"] == "upload_not_yours"
    # Alice deleting her upload leaves mallory's copy alone.
    discard_upload(alices, actor=Actor.command_line(alice))
    assert not Path(alices).exists() and Path(mallorys["dataset_path"]).read_bytes() == QA_BYTES


def test_a_copy_two_projects_use_outlives_deleting_one_of_them(team, tiny_llama_in_cache, settings):
    actor = Actor.command_line(team["alice"])
    first = receive_upload(actor, SimpleUploadedFile("a.jsonl", QA_BYTES), "a.jsonl")
    second = receive_upload(actor, SimpleUploadedFile("b.jsonl", QA_BYTES), "b.jsonl")
    assert second.reused and second.path == first.path
    one = create_project(actor=actor, data=fields(team["root"], tiny_llama_in_cache[0], dataset_path=str(first)))
    two = create_project(
        actor=actor,
        data=fields(
            team["root"],
            tiny_llama_in_cache[0],
            name="two",
            dataset_path=str(second),
            output_directory=str(team["root"] / "outputs" / "two"),
        ),
    )
    delete_project(one, actor=actor)
    old = time.time() - (settings.MTM_UPLOAD_GRACE_HOURS + 1) * 3600
    Upload.objects.update(created_at=datetime.fromtimestamp(old, tz=UTC))
    assert cleanup_uploads() == [] and first.path.read_bytes() == QA_BYTES
    # A refused use of the shared copy (here: an explicit discard while `two` uses it) keeps it too.
    assert discard_upload(first.path, actor=actor) is False and first.path.is_file()
    delete_project(two, actor=actor)
    assert cleanup_uploads() == [str(first.path)] and not first.path.exists()


def test_a_refused_reupload_keeps_the_copy_another_project_uses(client, portal_roots, tiny_llama_in_cache, settings):
    alice, token = make_user_token("alice")
    path = upload_via_api(client, token, QA_BYTES).json()["dataset_path"]
    body = fields(portal_roots, tiny_llama_in_cache[0], dataset_path=path)
    assert call(client, "post", "/projects", body, token).status_code == 201
    # A second project whose saved model no longer resolves: its dataset upload is refused (422) and the refused
    # upload is discarded; the copy it was answered is the first project's dataset and must stay.
    broken = TrainingProject.objects.create(
        owner=alice, **{**body, "name": "broken", "model_name": "gone/model", "output_directory": "/nowhere"}
    )
    resp = client.post(
        f"/api/v1/projects/{broken.pk}/dataset",
        {"file": SimpleUploadedFile("again.jsonl", QA_BYTES)},
        headers={"Authorization": f"Bearer {token}"},
        secure=True,
    )
    assert resp.status_code == 422, resp.content
    assert Path(path).read_bytes() == QA_BYTES and Upload.objects.filter(path=path).exists()


def test_reuse_through_the_page_says_so(portal_roots, settings):
    from django.contrib.auth.models import User

    from tests.clients import secure_client

    page = secure_client(User.objects.create_user("alice"))
    sent = [
        page.post(
            "/projects/upload-dataset/",
            {"dataset_file": SimpleUploadedFile(name, QA_BYTES)},
            HTTP_HX_REQUEST="true",
        )
        for name in ("one.jsonl", "two.jsonl")
    ]
    assert [r.status_code for r in sent] == [200, 200]
    assert b"that copy is used" not in sent[0].content
    assert b"The same file as your earlier upload: that copy is used" in sent[1].content
    assert len(folders(settings)) == 1 and Upload.objects.count() == 1
