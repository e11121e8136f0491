"""The projects API through the test client: projects CRUD, dataset uploads, runs, permissions, the contract's
shapes, and the OpenAPI schema, with the tiny Llama in a temp HF cache and real dataset files."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from mtm.models import AuditEvent
from projects.models import RunStatus, TrainingProject, TrainingRun
from tests.api_client import API, call, codes, make_user_token
from tests.pipeline_helpers import QA_ROWS
from tests.token_counts import count_pending

PROJECT_KEYS = {"id", "name", "owner", "model_name", "revision", "dataset_path", "output_directory", "method",
                "hyperparameters", "validation_prompt", "created_at", "last_run"}  # fmt: skip
RUN_KEYS = {"id", "project_id", "status", "stage_failed", "error", "resolved_model", "device", "progress", "metrics",
            "validation", "created_at", "started_at", "finished_at", "log_tail"}  # fmt: skip
PROGRESS_KEYS = {"step", "total_steps", "epoch", "loss", "learning_rate", "tokens_per_second", "eta_seconds"}
MISSING_MODEL = "meta-llama/Llama-3.2-3B-Instruct"


@pytest.fixture
def roots(portal_roots) -> Path:
    return portal_roots


@pytest.fixture
def owner(db):
    return make_user_token("owner")


@pytest.fixture
def member(db):
    return make_user_token("member")


@pytest.fixture
def staff(db):
    return make_user_token("staff", staff=True)


def project_body(roots: Path, model_name: str, **changes) -> dict:
    base = {
        "name": "demo",
        "model_name": model_name,
        "dataset_path": str(roots / "datasets" / "qa.jsonl"),
        "output_directory": str(roots / "outputs" / "demo"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 32},
        "validation_prompt": "Say hello:",
    }
    return {**base, **changes}


@pytest.fixture
def project(client, roots, owner, tiny_llama_in_cache) -> dict:
    resp = call(client, "post", "/projects", project_body(roots, tiny_llama_in_cache[0]), owner[1])
    assert resp.status_code == 201, resp.content
    return resp.json()


def upload(client, path: str, name: str, content: bytes, token: str, **form):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"file": SimpleUploadedFile(name, content), **form}
    return client.post(API + path, data, secure=True, headers={"Authorization": f"Bearer {token}"})


def refused(resp, status: int = 422) -> list[dict]:
    assert resp.status_code == status, resp.content
    assert resp["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["detail"] and body["errors"]
    return body["errors"]


def live_run(project_id: int, status: str = RunStatus.TRAINING) -> TrainingRun:
    project = TrainingProject.objects.get(pk=project_id)
    return TrainingRun.objects.create(
        project=project, status=status, run_folder=os.path.realpath(project.output_directory)
    )


# --- create ----------------------------------------------------------------------------------------------------


def test_create_answers_201_with_the_contract_shape(client, roots, owner, tiny_llama_in_cache):
    name = tiny_llama_in_cache[0]
    resp = call(client, "post", "/projects", project_body(roots, name), owner[1])
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert set(body) >= PROJECT_KEYS
    assert (body["owner"], body["model_name"], body["method"], body["last_run"]) == ("owner", name, "lora", None)
    assert body["revision"] is None and body["dataset_format"] == "prompt_completion"
    assert body["eval_dataset_path"] is None and body["eval_dataset_sha256"] is None  # no eval file unless given
    assert body["output_directory"] == str(roots / "outputs" / "demo")
    assert body["hyperparameters"]["max_steps"] == 5 and body["hyperparameters"]["lora_r"] == 16
    assert {"epochs", "learning_rate", "batch_size", "packing", "precision", "lora_alpha"} <= set(
        body["hyperparameters"]
    )
    event = AuditEvent.objects.get(action="project.create")
    assert (event.via, event.object_id, event.actor.username) == ("api", str(body["id"]), "owner")


def test_missing_model_is_422_with_the_guides_message(client, roots, owner):
    errors = refused(call(client, "post", "/projects", project_body(roots, MISSING_MODEL), owner[1]))
    [error] = errors
    assert (error["code"], error["field"]) == ("model_not_found", "model_name")
    assert error["message"].startswith(f"Model '{MISSING_MODEL}' not found. Please ensure the model is downloaded")
    assert error["hint"]
    assert not TrainingProject.objects.exists()


def test_output_directory_outside_the_roots_is_422(client, roots, owner, tiny_llama_in_cache):
    body = project_body(roots, tiny_llama_in_cache[0], output_directory="/etc/mtm-output")
    [error] = refused(call(client, "post", "/projects", body, owner[1]))
    assert (error["code"], error["field"]) == ("outside_allowed_roots", "output_directory")


def test_bad_dataset_row_is_422_naming_the_row(client, roots, owner, tiny_llama_in_cache):
    bad = roots / "datasets" / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": 7}\n')
    body = project_body(roots, tiny_llama_in_cache[0], dataset_path=str(bad))
    [error] = refused(call(client, "post", "/projects", body, owner[1]))
    assert error["field"] == "dataset_path" and "Row 2" in error["message"] and "completion" in error["message"]


def test_bad_hyperparameters_are_422_naming_each_field(client, roots, owner, tiny_llama_in_cache):
    body = project_body(roots, tiny_llama_in_cache[0], hyperparameters={"learning_rate": -1, "bogus": 1})
    errors = refused(call(client, "post", "/projects", body, owner[1]))
    assert {e["field"] for e in errors} == {"hyperparameters"}
    assert codes(errors) == ["invalid_hyperparameter"] * 2
    messages = " ".join(e["message"] for e in errors)
    assert "learning_rate" in messages and "bogus" in messages


def test_every_problem_is_answered_at_once(client, roots, owner):
    body = project_body(roots, MISSING_MODEL, name="", output_directory="relative/dir", dataset_path="/etc/passwd")
    errors = refused(call(client, "post", "/projects", body, owner[1]))
    assert {e["field"] for e in errors} == {"name", "model_name", "output_directory", "dataset_path"}
    assert all(set(e) == {"code", "message", "hint", "field"} and e["message"] for e in errors)


MALFORMED = [
    ("{not json", "invalid_json"),
    ("[1]", "invalid_json"),
    ({}, "invalid_request"),
    ({"name": 5, "model_name": "org/m", "dataset_path": "/d", "output_directory": "/o"}, "invalid_request"),
    ({"name": "x\x00", "model_name": "org/m", "dataset_path": "/d", "output_directory": "/o"}, "invalid_request"),
    ({"name": "x", "model_name": "org/m", "dataset_path": "/d\ud800", "output_directory": "/o"}, "invalid_json"),
    ({"name": "x", "model_name": "org/m", "dataset_path": "/d", "output_directory": "/o", "method": "qlora"},
     "invalid_request"),
    ({"name": "x", "model_name": "org/m", "dataset_path": "/d", "output_directory": "/o", "hyperparameters": [1]},
     "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "code"), MALFORMED)
def test_malformed_create_bodies_are_422_json(client, roots, owner, body, code):
    errors = refused(call(client, "post", "/projects", body, owner[1]))
    assert set(codes(errors)) == {code}


def test_hostile_model_names_and_revisions_are_422_not_500(client, roots, owner):
    for changes in ({"model_name": "../../etc/passwd"}, {"model_name": "org/na\x00me"}, {"revision": "../x"}):
        body = {**project_body(roots, "org/model"), **changes}
        errors = refused(call(client, "post", "/projects", body, owner[1]))
        assert {"invalid_model_name", "invalid_revision"} & set(codes(errors))


# --- datasets --------------------------------------------------------------------------------------------------


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_upload_then_create_with_the_returned_path(client, roots, owner, tiny_llama_in_cache):
    name = tiny_llama_in_cache[0]
    resp = upload(client, "/datasets", "my data.jsonl", jsonl_bytes(QA_ROWS), owner[1], model_name=name)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    path = Path(body["dataset_path"])
    assert path.is_file() and path.is_relative_to(roots / "media" / "datasets") and path.name == "my_data.jsonl"
    report = body["report"]
    assert (report["format"], report["rows"], report["valid"]) == ("prompt_completion", 3, True)
    assert report["preview"][0] == QA_ROWS[0]
    assert report["token_stats"] is None and report["token_stats_state"] == "pending"  # a worker counts them
    count_pending(path, owner[0])
    again = upload(client, "/datasets", "my data.jsonl", jsonl_bytes(QA_ROWS), owner[1], model_name=name).json()
    assert again["dataset_path"] == str(path) and again["report"]["token_stats_state"] == "done"
    assert again["report"]["token_stats"]["max"] > 0 and again["report"]["token_stats"]["total"] > 0
    resp = call(client, "post", "/projects", project_body(roots, name, dataset_path=str(path)), owner[1])
    assert resp.status_code == 201, resp.content
    assert resp.json()["dataset_path"] == str(path)


def test_upload_without_a_model_has_no_token_stats(client, roots, owner):
    resp = upload(client, "/datasets", "d.jsonl", jsonl_bytes(QA_ROWS), owner[1])
    assert resp.status_code == 200 and resp.json()["report"]["token_stats"] is None


def test_bad_uploads_are_422_and_leave_nothing_behind(client, roots, owner):
    bad_rows = b'{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n'
    [error] = refused(upload(client, "/datasets", "d.jsonl", bad_rows, owner[1]))
    assert error["field"] == "file" and "Row 2" in error["message"]
    [error] = refused(upload(client, "/datasets", "d.exe", b"x", owner[1]))
    assert (error["code"], error["field"]) == ("upload_bad_extension", "file")
    [error] = refused(upload(client, "/datasets", "d.jsonl", b"", owner[1]))
    assert error["code"] == "dataset_empty"
    uploads = roots / "media" / "datasets"
    assert not uploads.exists() or not any(uploads.iterdir())
    errors = refused(call(client, "post", "/datasets", {"file": "text"}, owner[1]))
    assert "file" in errors[0]["message"]


def test_malformed_multipart_is_422_json(client, roots, owner, project):
    for path in ("/datasets", f"/projects/{project['id']}/dataset"):
        headers = {"Authorization": f"Bearer {owner[1]}"}
        resp = client.generic("POST", API + path, b"garbage", "multipart/form-data", secure=True, headers=headers)
        [error] = refused(resp)
        assert error["code"] == "invalid_multipart" and "boundary" in error["message"]


def test_project_dataset_upload_replaces_the_dataset(client, roots, owner, project):
    rows = QA_ROWS + [{"prompt": "One more:", "completion": " row."}]
    resp = upload(client, f"/projects/{project['id']}/dataset", "more.jsonl", jsonl_bytes(rows), owner[1])
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["project"]["dataset_path"] == body["dataset_path"] != project["dataset_path"]
    # The rows at once; the token lengths are a worker's count, answered once it has run (the same file sent again).
    assert body["report"]["rows"] == 4 and body["report"]["token_stats_state"] == "pending"
    assert TrainingProject.objects.get(pk=project["id"]).dataset_path == body["dataset_path"]
    assert AuditEvent.objects.filter(action="project.update", object_id=str(project["id"]), via="api").exists()
    count_pending(body["dataset_path"], owner[0])
    again = upload(client, f"/projects/{project['id']}/dataset", "more.jsonl", jsonl_bytes(rows), owner[1]).json()
    assert again["reused"] and again["report"]["token_stats"]["max_seq_length"] == 32


def test_project_dataset_upload_that_does_not_validate_changes_nothing(client, roots, owner, project):
    bad = b'{"text": "a"}\n{"text": 3}\n'
    [error] = refused(upload(client, f"/projects/{project['id']}/dataset", "bad.jsonl", bad, owner[1]))
    assert error["field"] == "dataset_path" and "Row 2" in error["message"]
    assert TrainingProject.objects.get(pk=project["id"]).dataset_path == project["dataset_path"]
    assert not any((roots / "media" / "datasets").iterdir())


# --- read, change, delete --------------------------------------------------------------------------------------


def test_get_and_list_with_filters(client, roots, owner, member, project):
    token = member[1]
    resp = call(client, "get", f"/projects/{project['id']}", token=token)
    assert resp.status_code == 200 and resp.json()["id"] == project["id"]
    assert [p["id"] for p in call(client, "get", "/projects", token=token).json()] == [project["id"]]
    assert call(client, "get", "/projects?owner=owner", token=token).json()[0]["owner"] == "owner"
    assert call(client, "get", "/projects?owner=member", token=token).json() == []
    assert call(client, "get", "/projects?owner=a%00b", token=token).status_code == 422
    assert call(client, "get", "/projects?status=training", token=token).json() == []
    run = live_run(project["id"])
    listed = call(client, "get", "/projects?status=training", token=token).json()
    assert [p["last_run"]["id"] for p in listed] == [run.pk]
    assert call(client, "get", "/projects?status=bogus", token=token).status_code == 422


def test_patch_changes_fields_and_merges_hyperparameters(client, roots, owner, project):
    body = {"name": "renamed", "hyperparameters": {"learning_rate": 0.001}, "revision": ""}
    resp = call(client, "patch", f"/projects/{project['id']}", body, owner[1])
    assert resp.status_code == 200, resp.content
    hp = resp.json()["hyperparameters"]
    assert resp.json()["name"] == "renamed" and hp["learning_rate"] == 0.001 and hp["max_steps"] == 5
    event = AuditEvent.objects.get(action="project.update")
    assert event.changes["name"] == ["demo", "renamed"] and event.via == "api"


def test_patch_that_does_not_validate_is_422_and_changes_nothing(client, roots, owner, project):
    path = f"/projects/{project['id']}"
    [error] = refused(call(client, "patch", path, {"model_name": MISSING_MODEL}, owner[1]))
    assert (error["code"], error["field"]) == ("model_not_found", "model_name")
    [error] = refused(call(client, "patch", path, {"hyperparameters": {"batch_size": 0}}, owner[1]))
    assert "batch_size" in error["message"]
    [error] = refused(call(client, "patch", path, {"name": None}, owner[1]))
    assert error["code"] == "invalid_request" and "null" in error["message"]
    assert TrainingProject.objects.get(pk=project["id"]).model_name == project["model_name"]


def test_delete_is_204_and_409_while_a_run_is_live(client, roots, owner, project):
    path = f"/projects/{project['id']}"
    run = live_run(project["id"], RunStatus.QUEUED)
    [error] = refused(call(client, "delete", path, token=owner[1]), 409)
    assert error["code"] == "project_has_live_run" and f"/runs/{run.pk}/cancel" in error["hint"]
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)
    resp = call(client, "delete", path, token=owner[1])
    assert resp.status_code == 204 and resp.content == b""
    assert not TrainingProject.objects.filter(pk=project["id"]).exists()
    assert AuditEvent.objects.filter(action="project.delete", object_id=str(project["id"]), via="api").exists()


def test_members_can_read_but_not_change_others_projects(client, roots, member, project):
    token, pid = member[1], project["id"]
    run = live_run(pid, RunStatus.QUEUED)
    assert call(client, "get", f"/projects/{pid}", token=token).status_code == 200
    assert call(client, "get", f"/projects/{pid}/runs", token=token).status_code == 200
    assert call(client, "get", f"/runs/{run.pk}", token=token).status_code == 200
    attempts = [
        call(client, "patch", f"/projects/{pid}", {"name": "mine"}, token),
        call(client, "delete", f"/projects/{pid}", token=token),
        call(client, "post", f"/projects/{pid}/runs", {"resume": False}, token),
        call(client, "post", f"/runs/{run.pk}/cancel", token=token),
        upload(client, f"/projects/{pid}/dataset", "d.jsonl", jsonl_bytes(QA_ROWS), token),
    ]
    for resp in attempts:
        [error] = refused(resp, 403)
        assert error["code"] == "permission_denied" and "owner" in error["message"]
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and TrainingProject.objects.get(pk=pid).name == "demo"


def test_staff_may_change_anyones_project(client, roots, staff, project):
    resp = call(client, "patch", f"/projects/{project['id']}", {"description": "checked"}, staff[1])
    assert resp.status_code == 200 and resp.json()["description"] == "checked"


def test_unauthenticated_calls_are_401(client, roots, project):
    for method, path in (("get", "/projects"), ("get", f"/projects/{project['id']}"), ("post", "/runs/1/cancel")):
        [error] = refused(call(client, method, path), 401)
        assert error["code"] == "not_authenticated"


def test_unknown_ids_are_404_and_non_numbers_422(client, roots, owner):
    token = owner[1]
    for method, path in [("get", "/projects/999999"), ("patch", "/projects/999999"), ("delete", "/projects/0"),
                         ("get", "/projects/999999/runs"), ("post", "/projects/999999/runs"),
                         ("get", f"/runs/{2**70}"), ("post", "/runs/-1/cancel")]:  # fmt: skip
        body = {} if method in ("patch", "post") else None
        [error] = refused(call(client, method, path, body, token), 404)
        assert error["code"] == "not_found" and error["hint"]
    refused(call(client, "get", "/projects/abc", token=token), 422)
    refused(call(client, "get", "/runs/1.5", token=token), 422)


def test_registry_paths_still_answer_beside_the_projects_router(client, roots, owner, tiny_llama_in_cache):
    resp = call(client, "post", "/projects/validate-model", {"model_name": tiny_llama_in_cache[0]}, owner[1])
    assert resp.status_code == 200 and resp.json()["valid"] is True
    resp = call(client, "get", "/projects/models/available", token=owner[1])
    assert resp.status_code == 200 and resp.json()["count"] >= 1


# --- runs ------------------------------------------------------------------------------------------------------


def test_start_queues_a_run_then_cancel_and_cancel_again(
    client, transactional_db, celery_broker, roots, owner, project
):
    resp = call(client, "post", f"/projects/{project['id']}/runs", {"resume": False}, owner[1])
    assert resp.status_code == 201, resp.content
    run = resp.json()
    assert set(run) >= RUN_KEYS
    assert (run["status"], run["project_id"], run["error"], run["validation"]) == (
        "queued", project["id"], None, None
    )  # fmt: skip
    assert set(run["progress"]) == PROGRESS_KEYS and run["metrics"] == []
    assert TrainingRun.objects.get(pk=run["id"]).task_ids.get("resolve")  # published to the real broker
    assert AuditEvent.objects.filter(action="run.start", object_id=str(run["id"]), via="api").exists()
    listed = call(client, "get", f"/projects/{project['id']}/runs", token=owner[1]).json()
    assert [r["id"] for r in listed] == [run["id"]]
    assert call(client, "get", f"/projects/{project['id']}", token=owner[1]).json()["last_run"]["id"] == run["id"]

    resp = call(client, "post", f"/runs/{run['id']}/cancel", token=owner[1])
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled" and resp.json()["finished_at"]
    assert AuditEvent.objects.filter(action="run.cancel", object_id=str(run["id"]), via="api").exists()
    [error] = refused(call(client, "post", f"/runs/{run['id']}/cancel", token=owner[1]), 409)
    assert error["code"] == "run_ended" and "cancelled" in error["message"]


def test_resume_without_a_complete_checkpoint_is_refused_with_the_reason(client, roots, owner, project):
    stopped = TrainingRun.objects.create(project_id=project["id"], status=RunStatus.CANCELLED)
    output = Path(project["output_directory"]) / f"run-{stopped.pk}"  # a run's checkpoints are in its own folder
    TrainingRun.objects.filter(pk=stopped.pk).update(run_folder=str(output))
    (output / "checkpoint-4").mkdir(
        parents=True
    )  # cut short: the trainer writes trainer_state.json last (max_steps is 5)
    [error] = refused(call(client, "post", f"/projects/{project['id']}/runs", {"resume": True}, owner[1]), 422)
    assert error["code"] == "no_checkpoint" and str(output) in error["message"] and "fresh run" in error["hint"]
    assert TrainingRun.objects.count() == 1
    (output / "checkpoint-4" / "trainer_state.json").write_text("{}")
    resp = call(client, "post", f"/projects/{project['id']}/runs", {"resume": True}, owner[1])
    assert resp.status_code == 201 and TrainingRun.objects.get(pk=resp.json()["id"]).resume is True


def test_start_without_a_body_defaults_to_no_resume(client, roots, owner, project):
    resp = call(client, "post", f"/projects/{project['id']}/runs", "", owner[1])  # an empty body
    assert resp.status_code == 201, resp.content
    assert TrainingRun.objects.get(pk=resp.json()["id"]).resume is False
    refused(call(client, "post", f"/projects/{project['id']}/runs", {"resume": "yes"}, owner[1]))


def test_start_while_a_live_run_writes_the_same_output_is_409(client, roots, owner, project):
    busy = live_run(project["id"])
    [error] = refused(call(client, "post", f"/projects/{project['id']}/runs", {"resume": True}, owner[1]), 409)
    assert error["code"] == "output_directory_busy" and f"Run {busy.pk}" in error["message"]
    assert TrainingRun.objects.count() == 1


def test_cancel_a_training_run_asks_it_to_stop(client, roots, owner, project):
    run = live_run(project["id"], RunStatus.TRAINING)
    resp = call(client, "post", f"/runs/{run.pk}/cancel", token=owner[1])
    assert resp.status_code == 200
    assert (resp.json()["status"], resp.json()["cancel_requested"]) == ("training", True)


def test_cancel_an_ended_run_is_409(client, roots, owner, project):
    run = live_run(project["id"], RunStatus.SUCCEEDED)
    [error] = refused(call(client, "post", f"/runs/{run.pk}/cancel", token=owner[1]), 409)
    assert error["code"] == "run_ended" and "succeeded" in error["message"]


def test_run_shape_with_everything_filled_in(client, roots, owner, project):
    now = timezone.now()
    validation = {
        "passed": True,
        "checks": [{"name": n, "passed": True, "detail": "ok", "seconds": 0.5}
                   for n in ("files", "json", "load", "inference")],
        "sample_output": "Hello world!",
        "prompt": "Say hello:",
    }  # fmt: skip
    run = TrainingRun.objects.create(
        project_id=project["id"],
        status=RunStatus.FAILED,
        stage_failed="validate",
        error_code="validation_failed",
        error_message="The inference check failed.",
        error_hint="See the report.",
        resolved_source="cache",
        resolved_path="/cache/models--org--m/snapshots/" + "a" * 40,
        resolved_revision="a" * 40,
        device="cuda:0 (NVIDIA H100 80GB HBM3)",
        progress={"step": 12, "total_steps": 12, "epoch": 3.0, "loss": 0.5, "learning_rate": 1e-4,
                  "tokens_per_second": 900.5, "eta_seconds": 0},
        metrics=[{"step": 1, "loss": 2.5, "learning_rate": 0.01, "tokens_per_second": 800.0},
                 {"step": 2, "loss": "nan", "learning_rate": None, "tokens_per_second": "x"}],
        validation=validation,
        log_tail="step 12 loss 0.5",
        started_at=now - timedelta(minutes=2),
        finished_at=now,
    )  # fmt: skip
    resp = call(client, "get", f"/runs/{run.pk}", token=owner[1])
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) >= RUN_KEYS
    assert (body["status"], body["stage_failed"], body["device"]) == ("failed", "validate", run.device)
    assert body["error"] == {"code": "validation_failed", "message": "The inference check failed.",
                             "hint": "See the report."}  # fmt: skip
    assert body["resolved_model"] == {"source": "cache", "path": run.resolved_path, "revision": "a" * 40}
    assert body["progress"]["step"] == 12 and body["progress"]["eta_seconds"] == 0
    assert body["metrics"][0] == {"step": 1, "loss": 2.5, "learning_rate": 0.01, "tokens_per_second": 800.0}
    assert body["metrics"][1] == {"step": 2, "loss": None, "learning_rate": None, "tokens_per_second": None}
    assert body["validation"]["passed"] is True and [c["name"] for c in body["validation"]["checks"]] == [
        "files", "json", "load", "inference"
    ]  # fmt: skip
    assert body["validation"]["sample_output"] == "Hello world!" and body["log_tail"] == "step 12 loss 0.5"
    assert body["started_at"] and body["finished_at"]


def test_a_new_run_has_nulls_where_the_contract_says_null(client, roots, owner, project):
    run = TrainingRun.objects.create(project_id=project["id"])
    body = call(client, "get", f"/runs/{run.pk}", token=owner[1]).json()
    assert [body[k] for k in ("stage_failed", "error", "resolved_model", "device", "validation")] == [None] * 5
    assert body["progress"] == dict.fromkeys(PROGRESS_KEYS) and body["started_at"] is None


# --- OpenAPI ---------------------------------------------------------------------------------------------------


def test_openapi_lists_every_projects_path_with_its_error_responses(client, roots, owner):
    schema = call(client, "get", "/openapi.json", token=owner[1]).json()
    paths = schema["paths"]
    expected = {
        "/api/v1/projects": {"get", "post"},
        "/api/v1/projects/{project_id}": {"get", "patch", "delete"},
        "/api/v1/projects/{project_id}/dataset": {"post"},
        "/api/v1/datasets": {"post"},
        "/api/v1/projects/{project_id}/runs": {"get", "post"},
        "/api/v1/runs/{run_id}": {"get"},
        "/api/v1/runs/{run_id}/cancel": {"post"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods
        for operation in paths[path].values():
            assert {"401", "422"} <= set(operation["responses"])
    assert {"201", "403", "409"} <= set(paths["/api/v1/projects/{project_id}/runs"]["post"]["responses"])
    assert "204" in paths["/api/v1/projects/{project_id}"]["delete"]["responses"]
    assert "POST /api/v1/datasets" in paths["/api/v1/projects"]["post"]["description"]
    assert "/api/v1/projects/validate-model" in paths  # the registry's paths are still there
