"""The project pages through the test client: list, the new/edit form with its inline checks and uploads, a
project's detail, Start / Cancel / Delete and who may press them, the run page's polled region, the loss chart,
and one real run from the form to a validated model on a real worker."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django.utils.html import escape

from mtm.models import AuditEvent
from projects.models import RunStage, RunStatus, TrainingProject, TrainingRun
from projects.runs.charts.axes import nice_ticks
from projects.runs.charts.loss import build_loss_chart, loss_chart_svg
from tests.clients import form_data, secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, write_jsonl
from tests.token_counts import counted

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
MISSING = "meta-llama/Llama-3.2-3B-Instruct"


@pytest.fixture
def roots(portal_roots) -> Path:
    return portal_roots


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("alice", password="alice-pass-1234")


@pytest.fixture
def member(db) -> User:
    return User.objects.create_user("bob", password="bob-pass-1234")


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_superuser("boss", password="boss-pass-1234")


def make_project(owner: User, roots: Path, model_name: str = "test-org/tiny-llama", **fields) -> TrainingProject:
    values = {
        "name": "demo",
        "owner": owner,
        "model_name": model_name,
        "dataset_path": str(roots / "datasets" / "qa.jsonl"),
        "output_directory": str(roots / "outputs" / "demo"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5},
        **fields,
    }
    return TrainingProject.objects.create(**values)


def text(response) -> str:
    return response.content.decode()


def section(html: str, start: str, end: str) -> str:
    """The part of `html` from the first `start` to the next `end` after it (asserting both are there)."""
    assert start in html, f"{start!r} not in the page"
    rest = html[html.index(start) :]
    assert end in rest, f"{end!r} not after {start!r}"
    return rest[: rest.index(end)]


# --- access ---------------------------------------------------------------------------------------------------

PAGES = [
    ("get", "/projects/"),
    ("get", "/projects/new/"),
    ("get", "/projects/1/"),
    ("get", "/projects/1/edit/"),
    ("get", "/projects/1/delete/"),
    ("post", "/projects/1/start/"),
    ("get", "/projects/runs/1/"),
    ("post", "/projects/runs/1/cancel/"),
    ("get", "/projects/check-output-dir/?output_directory=/tmp"),
    ("get", "/projects/check-dataset/?dataset_path=/tmp/x.jsonl"),
    ("post", "/projects/upload-dataset/"),
]


@pytest.mark.parametrize(("method", "url"), PAGES)
def test_every_project_page_needs_login(method, url):
    response = getattr(secure_client(), method)(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_state_changes_are_post_only(owner, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(project=project)
    client = secure_client(owner)
    assert client.get(f"/projects/{project.pk}/start/").status_code == 405
    assert client.get(f"/projects/runs/{run.pk}/cancel/").status_code == 405
    assert TrainingRun.objects.count() == 1


def test_member_sees_someone_elses_project_but_cannot_change_it(owner, member, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(project=project, status=RunStatus.TRAINING)
    client = secure_client(member)
    assert "demo" in text(client.get("/projects/"))
    detail = client.get(f"/projects/{project.pk}/")
    assert detail.status_code == 200
    assert f'action="/projects/{project.pk}/start/"' not in text(detail) and "Edit</a>" not in text(detail)
    run_page = client.get(f"/projects/runs/{run.pk}/")
    assert run_page.status_code == 200 and "/cancel/" not in text(run_page)
    for method, url in [
        ("get", f"/projects/{project.pk}/edit/"),
        ("post", f"/projects/{project.pk}/edit/"),
        ("post", f"/projects/{project.pk}/start/"),
        ("post", f"/projects/runs/{run.pk}/cancel/"),
        ("get", f"/projects/{project.pk}/delete/"),
        ("post", f"/projects/{project.pk}/delete/"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 403, url
        assert "Only the owner of project &#x27;demo&#x27; (alice) or staff" in text(response)
    run.refresh_from_db()
    assert run.status == RunStatus.TRAINING and not run.cancel_requested
    assert TrainingProject.objects.filter(pk=project.pk).exists() and TrainingRun.objects.count() == 1


def test_staff_may_cancel_anyones_run(owner, staff, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(project=project, status=RunStatus.QUEUED)
    response = secure_client(staff).post(f"/projects/runs/{run.pk}/cancel/")
    assert response.status_code == 302 and response["Location"] == f"/projects/runs/{run.pk}/"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    event = AuditEvent.objects.get(action="run.cancel")
    assert event.actor == staff and event.object_id == str(run.pk) and event.via == "web"


def test_cancelling_a_training_run_promises_a_checkpoint_only_if_one_was_trained(owner, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(project=project, status=RunStatus.TRAINING)
    page = secure_client(owner).post(f"/projects/runs/{run.pk}/cancel/", follow=True)
    assert f"Cancelling run {run.pk}: training stops at its next step, saving a checkpoint if it has trained one." in (
        text(page)
    )


# --- list and detail ------------------------------------------------------------------------------------------


def test_list_shows_every_project_with_its_last_run(owner, member, roots):
    first = make_project(owner, roots, name="first")
    make_project(member, roots, name="second", method="full")
    TrainingRun.objects.create(project=first, status=RunStatus.SUCCEEDED)
    TrainingRun.objects.create(project=first, status=RunStatus.FAILED, stage_failed=RunStage.RESOLVE)
    html = text(secure_client(member).get("/projects/"))
    assert "first" in html and "second" in html and "alice" in html
    row = section(html, ">first<", "</tr>")
    assert "failed" in row and "at resolve" in row and "succeeded" not in row
    assert "never run" in section(html, ">second<", "</tr>") and "Full fine-tune" in html
    assert 'href="/projects/new/"' in html


def test_detail_shows_settings_hyperparameters_and_runs(owner, roots):
    project = make_project(owner, roots, hyperparameters={"max_steps": 5, "lora_r": 8})
    now = timezone.now()
    TrainingRun.objects.create(
        project=project,
        status=RunStatus.SUCCEEDED,
        device="cpu",
        started_at=now - timezone.timedelta(seconds=125),
        finished_at=now,
    )
    html = text(secure_client(owner).get(f"/projects/{project.pk}/"))
    assert str(roots / "outputs" / "demo") in html and "test-org/tiny-llama" in html
    assert "LoRA r</th><td>8</td>" in html and "Max steps</th><td>5</td>" in html
    assert "2m 05s" in html and ">cpu<" in html
    assert f'action="/projects/{project.pk}/start/"' in html
    assert "resume" not in section(html, 'id="runs"', "</table>").lower().replace("resumed", "")


def test_resume_button_appears_only_with_a_checkpoint(owner, roots):
    project = make_project(owner, roots)
    client = secure_client(owner)
    assert 'name="resume"' not in text(client.get(f"/projects/{project.pk}/"))
    run = TrainingRun.objects.create(project=project, status=RunStatus.CANCELLED)
    run.run_folder = str(roots / "outputs" / "demo" / f"run-{run.pk}")  # a run's checkpoints: its own folder
    run.save()
    checkpoint = Path(run.run_folder) / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    html = text(client.get(f"/projects/{project.pk}/"))
    assert 'name="resume"' in html and "resume from checkpoint-4" in html


def test_detail_runs_card_polls_while_a_run_is_live(owner, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(project=project, status=RunStatus.TRAINING)
    client = secure_client(owner)
    live = client.get(f"/projects/{project.pk}/", **HX)
    assert live.status_code == 200 and 'hx-trigger="every 2s"' in text(live) and "HX-Request" in live["Vary"]
    assert "<html" not in text(live)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    ended = client.get(f"/projects/{project.pk}/", **HX)
    assert ended.status_code == 286 and "every 2s" not in text(ended) and "succeeded" in text(ended)


def test_unknown_project_and_run_are_404(owner):
    client = secure_client(owner)
    assert client.get("/projects/999/").status_code == 404
    assert client.get("/projects/runs/999/").status_code == 404


# --- the form ----------------------------------------------------------------------------------------------------


def test_new_form_has_the_model_field_and_inline_checks(owner, roots):
    html = text(secure_client(owner).get("/projects/new/"))
    assert "Validate Model" in html and 'hx-get="/models/validate-field/"' in html
    assert 'hx-get="/projects/check-output-dir/"' in html and 'hx-get="/projects/check-dataset/"' in html
    assert 'hx-post="/projects/upload-dataset/"' in html and 'enctype="multipart/form-data"' in html
    assert 'value="0.0002"' in html  # the default learning rate
    assert str(roots / "outputs") in html and str(roots / "datasets") in html  # the allowed roots, as help
    assert '<fieldset class="lora-fields">' in html


def test_eval_file_outside_the_roots_is_refused_under_its_own_box(owner, roots, tiny_llama_in_cache):
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, tiny_llama_in_cache[0], eval_dataset_path="/etc/passwd")
    )
    assert response.status_code == 422
    field = section(text(response), 'id="eval-dataset-field"', 'id="eval-dataset-status"')
    assert "Dataset /etc/passwd is outside the allowed dataset roots" in field
    assert 'hx-get="/projects/check-eval-dataset/"' in text(response)
    assert not TrainingProject.objects.exists()


def test_missing_model_is_refused_with_the_resolver_message_and_hint_under_the_field(owner, roots):
    response = secure_client(owner).post("/projects/new/", form_data(roots, MISSING))
    assert response.status_code == 422
    field = section(text(response), 'class="model-field', 'id="id_model_name-status"')
    assert escape(f"Model '{MISSING}' not found. Please ensure the model is downloaded") in field
    assert f"hf download {MISSING}" in field  # the hint, as steps
    assert "The project was not saved" in text(response)
    assert not TrainingProject.objects.exists()


def test_output_directory_outside_the_roots_is_refused_under_its_field(owner, roots, tiny_llama_in_cache):
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, tiny_llama_in_cache[0], output_directory="/etc/mtm")
    )
    assert response.status_code == 422
    field = section(text(response), 'for="id_output_directory"', 'id="output-status"')
    assert "Output directory /etc/mtm is outside the allowed output roots" in field
    assert "ask staff to add a root" in field
    assert not TrainingProject.objects.exists()


def test_dataset_with_a_bad_row_is_refused_naming_the_row(owner, roots, tiny_llama_in_cache):
    bad = roots / "datasets" / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": 7}\n')
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, tiny_llama_in_cache[0], dataset_path=str(bad))
    )
    assert response.status_code == 422
    field = section(text(response), 'id="dataset-field"', 'id="dataset-status"')
    assert "Row 2" in field and "completion" in field
    assert not TrainingProject.objects.exists()


def test_bad_hyperparameter_is_shown_under_its_own_box(owner, roots, tiny_llama_in_cache):
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, tiny_llama_in_cache[0], learning_rate="fast", batch_size="0")
    )
    assert response.status_code == 422
    html = text(response)
    assert "Hyperparameter &#x27;learning_rate&#x27; = &#x27;fast&#x27; is not allowed" in section(
        html, 'for="id_learning_rate"', "</div>"
    )
    assert "Hyperparameter &#x27;batch_size&#x27; = 0 is not allowed" in section(html, 'for="id_batch_size"', "</div>")


def test_valid_project_is_created_and_audited(owner, roots, tiny_llama_in_cache):
    response = secure_client(owner).post("/projects/new/", form_data(roots, tiny_llama_in_cache[0]))
    project = TrainingProject.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/"
    assert project.owner == owner and project.method == "lora" and project.dataset_format == "prompt_completion"
    assert project.hyperparameters["max_steps"] == 5 and project.hyperparameters["max_seq_length"] == 16
    assert project.hyperparameters["merge_after_training"] is True and project.hyperparameters["packing"] is False
    assert project.validation_prompt == "Say hello:"
    assert project.eval_dataset_path == ""  # the eval file box left blank: no eval file
    assert AuditEvent.objects.filter(action="project.create", object_id=str(project.pk), actor=owner).exists()


def test_upload_creates_the_project_with_the_stored_dataset(owner, roots, tiny_llama_in_cache):
    upload = SimpleUploadedFile("my data.jsonl", (roots / "datasets" / "qa.jsonl").read_bytes())
    data = form_data(roots, tiny_llama_in_cache[0], dataset_path="", dataset_file=upload)
    response = secure_client(owner).post("/projects/new/", data)
    assert response.status_code == 302, text(response)
    project = TrainingProject.objects.get()
    stored = Path(project.dataset_path)
    assert stored.is_relative_to(roots / "media" / "datasets") and stored.name == "my_data.jsonl"
    assert stored.read_bytes() == (roots / "datasets" / "qa.jsonl").read_bytes()


def test_refused_form_keeps_the_uploaded_dataset(owner, roots):
    upload = SimpleUploadedFile("train.jsonl", (roots / "datasets" / "qa.jsonl").read_bytes())
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, MISSING, dataset_path="", dataset_file=upload)
    )
    assert response.status_code == 422
    [stored] = (roots / "media" / "datasets").glob("*/train.jsonl")
    assert f'value="{stored}"' in section(text(response), 'id="dataset-field"', 'id="dataset-status"')
    assert "your upload is kept" in text(response)


def test_a_refused_form_without_an_upload_does_not_claim_one_was_kept(owner, roots):
    response = secure_client(owner).post("/projects/new/", form_data(roots, MISSING))
    assert response.status_code == 422 and "The project was not saved" in text(response)
    assert "is kept" not in text(response)


def test_an_upload_whose_rows_are_refused_through_the_form_is_deleted(owner, roots, tiny_llama_in_cache):
    from projects.models import Upload

    upload = SimpleUploadedFile("bad.jsonl", b'{"prompt": "a", "completion": 7}\n')
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, tiny_llama_in_cache[0], dataset_path="", dataset_file=upload)
    )
    assert response.status_code == 422 and "Row 1" in text(response)
    assert list((roots / "media" / "datasets").iterdir()) == [] and not Upload.objects.exists()
    assert not TrainingProject.objects.exists()


def test_another_members_upload_is_refused_and_not_previewed(owner, roots, tiny_llama_in_cache):
    rows = b'{"prompt": "OWNERS-PRIVATE-PROMPT", "completion": "x"}\n' * 3
    stored = secure_client(owner).post(
        "/projects/upload-dataset/", {"dataset_file": SimpleUploadedFile("mine.jsonl", rows)}, **HX
    )
    [path] = (roots / "media" / "datasets").glob("*/mine.jsonl")
    assert "OWNERS-PRIVATE-PROMPT" in text(stored)
    member = secure_client(User.objects.create_user("member2"))
    check = text(member.get("/projects/check-dataset/", {"dataset_path": str(path)}, **HX))
    assert "was uploaded by alice" in check and "OWNERS-PRIVATE-PROMPT" not in check
    response = member.post("/projects/new/", form_data(roots, tiny_llama_in_cache[0], dataset_path=str(path)))
    assert response.status_code == 422 and "was uploaded by alice" in text(response)
    assert not TrainingProject.objects.exists() and path.is_file()


def test_upload_with_a_bad_extension_is_refused_under_the_upload(owner, roots, tiny_llama_in_cache):
    upload = SimpleUploadedFile("notes.txt", b"hello")
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, tiny_llama_in_cache[0], dataset_path="", dataset_file=upload)
    )
    assert response.status_code == 422
    assert "is not a JSON Lines, JSON or CSV file" in section(
        text(response), 'id="dataset-field"', 'id="dataset-status"'
    )
    assert not TrainingProject.objects.exists()


def test_edit_changes_the_project_and_refuses_bad_changes(owner, staff, roots, tiny_llama_in_cache):
    client = secure_client(owner)
    client.post("/projects/new/", form_data(roots, tiny_llama_in_cache[0]))
    project = TrainingProject.objects.get()
    page = text(client.get(f"/projects/{project.pk}/edit/"))
    assert 'value="demo"' in page and f'value="{tiny_llama_in_cache[0]}"' in page and 'value="16"' in page
    changed = client.post(f"/projects/{project.pk}/edit/", form_data(roots, tiny_llama_in_cache[0], name="renamed"))
    assert changed.status_code == 302
    project.refresh_from_db()
    assert project.name == "renamed"
    assert AuditEvent.objects.get(action="project.update").changes["name"] == ["demo", "renamed"]
    refused = secure_client(staff).post(f"/projects/{project.pk}/edit/", form_data(roots, MISSING, name="x"))
    assert refused.status_code == 422
    project.refresh_from_db()
    assert project.name == "renamed" and project.model_name == tiny_llama_in_cache[0]


# --- inline checks -------------------------------------------------------------------------------------------------


def test_output_dir_check_names_another_members_project_as_you_type(owner, roots):
    theirs = make_project(owner, roots, output_directory=str(roots / "outputs" / "theirs"))
    member = secure_client(User.objects.create_user("member2"))
    shown = text(member.get("/projects/check-output-dir/", {"output_directory": theirs.output_directory + "/m"}, **HX))
    assert "status-error" in shown and "of project &#x27;demo&#x27; (owner alice)" in shown
    own = text(secure_client(owner).get("/projects/check-output-dir/", {"output_directory": theirs.output_directory}))
    assert "status-error" not in own


def test_output_dir_check_shows_errors_and_what_will_happen(owner, roots):
    client = secure_client(owner)
    outside = text(client.get("/projects/check-output-dir/", {"output_directory": "/etc/mtm"}, **HX))
    assert "status-error" in outside and "is outside the allowed output roots" in outside
    relative = text(client.get("/projects/check-output-dir/", {"output_directory": "out/x"}, **HX))
    assert "is not an absolute path" in relative and "starts with &#x27;/&#x27;" in relative
    new = text(client.get("/projects/check-output-dir/", {"output_directory": str(roots / "outputs" / "n")}, **HX))
    assert "will be created" in new and "free" in new and "status-error" not in new
    (roots / "outputs" / "full").mkdir()
    (roots / "outputs" / "full" / "old.bin").write_bytes(b"x")
    full = text(client.get("/projects/check-output-dir/", {"output_directory": str(roots / "outputs" / "full")}))
    assert "already holds 1 entry." in full and "badge-warn" in full


def test_dataset_check_shows_format_rows_preview_and_truncation(owner, roots, tiny_llama_in_cache):
    long_rows = [{"prompt": "word " * 40, "completion": " end."}, *QA_ROWS]
    path = write_jsonl(roots / "datasets" / "long.jsonl", long_rows)
    params = {"dataset_path": str(path), "model_name": tiny_llama_in_cache[0], "max_seq_length": "32"}
    client = secure_client(owner)
    html = text(client.get("/projects/check-dataset/", params, **HX))
    assert "4 rows</strong>" in html and "prompt_completion" in html
    assert "Say hello:" in html  # a previewed row
    html = counted(client, html, path, owner)  # token lengths: counted by a worker, polled for
    assert "1 of 4 rows</strong> are longer than the max sequence length (32 tokens) and will be truncated" in html
    assert "<table" in html and "median" in html


def test_dataset_check_without_a_resolvable_model_still_previews(owner, roots):
    params = {"dataset_path": str(roots / "datasets" / "qa.jsonl"), "model_name": MISSING}
    html = text(secure_client(owner).get("/projects/check-dataset/", params, **HX))
    assert "3 rows</strong>" in html and "Token lengths are shown once the base model" in html


def test_dataset_check_names_the_bad_row_and_refuses_outside_paths(owner, roots):
    bad = roots / "datasets" / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "fine"}\nnot json\n')
    client = secure_client(owner)
    html = text(client.get("/projects/check-dataset/", {"dataset_path": str(bad)}, **HX))
    assert "status-error" in html and "Row 3" in html
    outside = text(client.get("/projects/check-dataset/", {"dataset_path": "/etc/passwd"}, **HX))
    assert "is outside the allowed dataset roots" in outside


def test_upload_endpoint_stores_the_file_and_fills_the_path(owner, roots):
    upload = SimpleUploadedFile("qa.jsonl", (roots / "datasets" / "qa.jsonl").read_bytes())
    response = secure_client(owner).post("/projects/upload-dataset/", {"dataset_file": upload}, **HX)
    assert response.status_code == 200
    [stored] = (roots / "media" / "datasets").glob("*/qa.jsonl")
    html = text(response)
    assert html.lstrip().startswith('<div id="dataset-field"') and f'value="{stored}"' in html
    assert "3 rows</strong>" in html and "uploaded as qa.jsonl" in html
    bad = secure_client(owner).post(
        "/projects/upload-dataset/", {"dataset_file": SimpleUploadedFile("x.exe", b"MZ")}, **HX
    )
    assert bad.status_code == 200 and "is not a JSON Lines, JSON or CSV file" in text(bad)


# --- Start, Delete -------------------------------------------------------------------------------------------------


def test_start_queues_a_run_on_the_real_broker(transactional_db, celery_broker, owner, roots):
    project = make_project(owner, roots)
    response = secure_client(owner).post(f"/projects/{project.pk}/start/")
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/projects/runs/{run.pk}/"
    assert run.status == RunStatus.QUEUED and run.started_by == owner and run.resume is False
    assert run.task_ids.get("resolve")  # published once the transaction committed
    assert AuditEvent.objects.filter(action="run.start", object_id=str(run.pk), via="web").exists()


def test_start_with_the_broker_down_records_why(transactional_db, owner, roots):
    from tests.workers import app_publishing_to

    project = make_project(owner, roots)
    with app_publishing_to("redis://127.0.0.1:1/0"):  # nothing listens on port 1
        secure_client(owner).post(f"/projects/{project.pk}/start/")
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.QUEUE
    assert run.error_code == "broker_unavailable"
    page = text(secure_client(owner).get(f"/projects/runs/{run.pk}/"))
    assert "Failed at queue" in page and "press Start again" in page
    assert "never started" in page and "Start a new run" in page


def test_start_refused_while_a_live_run_writes_the_same_output(owner, roots):
    project = make_project(owner, roots)
    busy = TrainingRun.objects.create(
        project=project, status=RunStatus.TRAINING, run_folder=str(roots / "outputs" / "demo")
    )
    response = secure_client(owner).post(f"/projects/{project.pk}/start/", follow=True)
    html = text(response)
    assert f"Run {busy.pk} of project &#x27;demo&#x27; is training" in html
    assert "Wait for it to end or cancel it" in html
    assert TrainingRun.objects.count() == 1


def test_resume_without_a_checkpoint_is_refused(owner, roots):
    project = make_project(owner, roots)
    response = secure_client(owner).post(f"/projects/{project.pk}/start/", {"resume": "1"}, follow=True)
    assert "Cannot resume: there is no checkpoint" in text(response)
    assert not TrainingRun.objects.exists()


def test_delete_asks_first_refuses_while_live_and_then_deletes(owner, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(project=project, status=RunStatus.TRAINING)
    client = secure_client(owner)
    assert "Delete the project" not in text(client.get(f"/projects/{project.pk}/delete/"))
    refused = client.post(f"/projects/{project.pk}/delete/")
    assert refused.status_code == 409 and "cannot be deleted while a run is live" in text(refused)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)
    assert "Delete the project" in text(client.get(f"/projects/{project.pk}/delete/"))
    deleted = client.post(f"/projects/{project.pk}/delete/")
    assert deleted.status_code == 302 and deleted["Location"] == "/projects/"
    assert not TrainingProject.objects.exists() and not TrainingRun.objects.exists()
    assert AuditEvent.objects.get(action="project.delete").object_repr == "demo"


# --- the run page --------------------------------------------------------------------------------------------------


def test_run_partial_polls_while_live_and_stops_with_286_once_ended(owner, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(
        project=project,
        status=RunStatus.TRAINING,
        progress={"step": 3, "total_steps": 12, "loss": 2.5, "tokens_per_second": 1234.0, "eta_seconds": 95},
        metrics=[{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.7}, {"step": 3, "loss": 2.5}],
        log_tail="step 3 loss 2.5",
    )
    client = secure_client(owner)
    live = client.get(f"/projects/runs/{run.pk}/", **HX)
    html = text(live)
    assert live.status_code == 200 and "HX-Request" in live["Vary"]
    assert html.lstrip().startswith('<div id="run-live"') and 'hx-trigger="every 2s"' in html
    assert 'hx-swap="outerHTML"' in html and "<html" not in html
    assert "step 3 / 12" in html and "25%" in html and "ETA 1m 35s" in html and "1234" in html
    assert "<polyline" in html and "step 3 loss 2.5" in html
    assert f'action="/projects/runs/{run.pk}/cancel/"' in html
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    ended = client.get(f"/projects/runs/{run.pk}/", **HX)
    assert ended.status_code == 286 and "every 2s" not in text(ended) and "succeeded" in text(ended)
    full = client.get(f"/projects/runs/{run.pk}/")
    assert full.status_code == 200 and "<html" in text(full) and "every 2s" not in text(full)


# The trainer's side of the protocol, as a child process: progress events from the real formatter, then it waits
# until the test has seen them on the page (a release file), so the page is read while the run is live.
PROTOCOL_CHILD = """
import os, sys, time
from projects.trainer.events import format_event
start = time.monotonic()
print(format_event("started", start, device="cpu", precision="fp32", examples=8, total_steps=3), flush=True)
for step in (1, 2, 3):
    print(format_event("progress", start, step=step, total_steps=3, loss=3.0 - step / 2, learning_rate=2e-4,
                       tokens_per_second=1500.0, epoch=step / 3, eta_seconds=(3 - step) * 2, logged=True), flush=True)
# Between logging steps a progress event carries the last logged loss again: its line must not repeat it.
print(format_event("progress", start, step=4, total_steps=5, loss=1.5, learning_rate=2e-4, logged=False), flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_the_log_card_shows_the_trainers_lines_as_they_come(owner, roots, tmp_path):
    import sys

    from django.conf import settings

    from projects.runs.stages import _RunRecorder
    from projects.runs.supervisor import Supervision, supervise

    run = TrainingRun.objects.create(project=make_project(owner, roots), status=RunStatus.TRAINING)
    client = secure_client(owner)
    assert "Nothing logged yet" in section(text(client.get(f"/projects/runs/{run.pk}/", **HX)), "<h2>Log", "</section>")
    recorder, release, seen = _RunRecorder(run.pk), tmp_path / "release", []

    def on_tick(tail: str) -> None:
        recorder.on_tick(tail)
        html = text(client.get(f"/projects/runs/{run.pk}/", **HX))
        if "step 4/5" in html and not release.exists():
            seen.append(html)
            release.touch()

    outcome = supervise(
        [sys.executable, "-c", PROTOCOL_CHILD, str(release)],
        cwd=Path(settings.BASE_DIR),
        env={**os.environ, "PYTHONPATH": str(settings.BASE_DIR)},
        cancel_file=tmp_path / "cancel",
        log_path=tmp_path / "trainer.log",
        sup=Supervision(
            on_event=recorder.on_event, should_cancel=recorder.should_cancel, on_tick=on_tick, tick_seconds=0.1
        ),
    )
    assert outcome.returncode == 0 and seen, outcome.tail
    live = seen[0]
    assert 'hx-trigger="every 2s"' in live  # read while the run was still training
    log = section(live, "<h2>Log", "</section>")
    assert "Nothing logged" not in log and "training started on cpu (fp32): 8 examples, 3 steps" in log
    for step, loss in ((1, "2.5000"), (2, "2.0000"), (3, "1.5000")):
        assert f"step {step}/3  loss {loss}  lr 2.00e-04  1500 tok/s" in log
    assert "ETA 2s" in log and "epoch 1.00" in log
    assert "step 4/5" in log and "step 4/5  loss" not in log  # a repeated loss is not shown as a fresh one
    assert log.index("trainer launched (pid ") < log.index("training started on cpu")
    assert "step 3/3" in (tmp_path / "trainer.log").read_text()  # the log file reads the same


def test_run_times_carry_a_date_unless_they_are_today(owner, roots):
    from datetime import timedelta

    project = make_project(owner, roots)
    now = timezone.localtime()
    old = TrainingRun.objects.create(project=project, status=RunStatus.SUCCEEDED)
    long_ago = now - timedelta(days=3)
    TrainingRun.objects.filter(pk=old.pk).update(created_at=long_ago, started_at=long_ago, finished_at=now)
    times = section(text(secure_client(owner).get(f"/projects/runs/{old.pk}/")), 'class="small times"', "</dd>")
    iso = long_ago.isoformat(timespec="seconds")
    assert f'queued <time datetime="{iso}" title="{iso}">{long_ago:%Y-%m-%d %H:%M:%S}</time>' in times
    assert f">{now:%H:%M:%S}</time>" in times and f">{now:%Y-%m-%d %H:%M:%S}</time>" not in times


def test_failed_run_shows_stage_message_and_hint(owner, roots):
    project = make_project(owner, roots)
    run = TrainingRun.objects.create(
        project=project,
        status=RunStatus.FAILED,
        stage_failed=RunStage.RESOLVE,
        error_code="model_not_found",
        error_message="Model 'x/y' not found. Please ensure the model is downloaded: <script>",
        error_hint="1. Download it: hf download x/y 2. Verify it is in the cache.",
    )
    html = text(secure_client(owner).get(f"/projects/runs/{run.pk}/"))
    failure = section(html, "run-failure", "</div>")
    assert "Failed at resolve" in failure and "model_not_found" in failure
    assert "&lt;script&gt;" in failure and "<script>" not in failure
    assert "<li>Download it: hf download x/y</li>" in failure


def test_run_with_validation_shows_the_four_checks(owner, roots):
    project = make_project(owner, roots)
    checks = [
        {"name": name, "passed": True, "detail": f"{name} ok", "seconds": 0.25}
        for name in ("files", "json", "load", "inference")
    ]
    run = TrainingRun.objects.create(
        project=project,
        status=RunStatus.SUCCEEDED,
        validation={"passed": True, "checks": checks, "sample_output": " Hello world!", "prompt": "Say hello:"},
    )
    html = text(secure_client(owner).get(f"/projects/runs/{run.pk}/"))
    report = section(html, 'class="card validation"', "</section>")
    for label in ("File checks", "Format validation (JSON)", "Loading test", "Inference test"):
        assert label in report
    assert report.count("badge-ok") == 5 and "0.25 s" in report
    assert "Say hello:" in report and "Hello world!" in report


def test_resume_offered_on_a_cancelled_run_with_a_checkpoint(owner, roots):
    project = make_project(owner, roots, hyperparameters={"max_steps": 10})
    run = TrainingRun.objects.create(project=project, status=RunStatus.CANCELLED)
    run.run_folder = str(roots / "outputs" / "demo" / f"run-{run.pk}")  # a run's checkpoints: its own folder
    run.save()
    client = secure_client(owner)
    assert "Resume from" not in text(client.get(f"/projects/runs/{run.pk}/"))
    checkpoint = Path(run.run_folder) / "checkpoint-8"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    html = text(client.get(f"/projects/runs/{run.pk}/"))
    assert "Resume from checkpoint-8" in html and 'name="resume" value="1"' in html


def test_resume_is_not_offered_from_a_checkpoint_at_max_steps(owner, roots):
    """Resuming would train nothing (Start refuses it: "Nothing left to train"), so neither page offers it; raising
    max_steps offers it again."""
    project = make_project(owner, roots, hyperparameters={"max_steps": 8})
    run = TrainingRun.objects.create(project=project, status=RunStatus.FAILED)  # e.g. failed at validation
    run.run_folder = str(roots / "outputs" / "demo" / f"run-{run.pk}")
    run.save()
    checkpoint = Path(run.run_folder) / "checkpoint-8"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 8}')
    client = secure_client(owner)
    for url in (f"/projects/runs/{run.pk}/", f"/projects/{project.pk}/"):
        html = text(client.get(url))
        assert "resume from" not in html.lower() and 'class="btn btn-primary">Start' in html, url
    project.hyperparameters = {"max_steps": 12}
    project.save()
    for url in (f"/projects/runs/{run.pk}/", f"/projects/{project.pk}/"):
        assert "resume from checkpoint-8" in text(client.get(url)).lower(), url


# --- the loss chart ------------------------------------------------------------------------------------------------


def test_loss_chart_draws_the_points_with_axes_and_labels():
    metrics = [{"step": s, "loss": 4.0 - s * 0.25, "learning_rate": 0.01} for s in range(1, 13)]
    chart = build_loss_chart(metrics)
    assert len(chart.points) == 12 and chart.first_loss == 3.75 and chart.last_loss == 1.0
    xs, ys = [x for x, _ in chart.points], [y for _, y in chart.points]
    assert xs == sorted(xs) and ys == sorted(ys)  # steps go right, a falling loss goes down the screen
    assert len(chart.y_ticks) >= 3 and len(chart.x_ticks) >= 3
    svg = loss_chart_svg(metrics)
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<polyline" in svg
    assert svg.count('class="tick"') == len(chart.x_ticks) + len(chart.y_ticks)
    assert "from 3.75 to 1 at step 12" in svg


def test_loss_chart_of_no_metrics_says_so():
    for metrics in ([], None, [{"step": 1}], [{"step": "x", "loss": float("nan")}], "junk"):
        svg = loss_chart_svg(metrics)
        assert svg.startswith("<svg") and "<polyline" not in svg and "No loss values yet" in svg


def test_loss_chart_of_one_point_and_of_many():
    assert len(build_loss_chart([{"step": 5, "loss": 1.5}]).points) == 1
    many = [{"step": s, "loss": 1 / s} for s in range(1, 5001)]
    chart = build_loss_chart(many)
    assert len(chart.points) <= 601 and chart.last_step == 5000
    assert nice_ticks(0, 1, 4) == [0, 0.25, 0.5, 0.75, 1.0]


# --- one real run, from the form to a validated model ------------------------------------------------------------


@pytest.mark.slow
def test_a_run_from_the_form_to_a_validated_model(transactional_db, roots, owner, tiny_llama_in_cache, celery_worker):
    client = secure_client(owner)
    hyper = {key: str(value) for key, value in FAST_HYPERPARAMETERS.items()}
    data = form_data(roots, tiny_llama_in_cache[0], method="full", **hyper)
    write_jsonl(roots / "datasets" / "qa.jsonl", QA_ROWS * 8)
    created = client.post("/projects/new/", data)
    assert created.status_code == 302, text(created)
    started = client.post(created["Location"] + "start/")
    assert started.status_code == 302
    run_url = started["Location"]
    deadline = time.monotonic() + 300
    response = client.get(run_url, **HX)
    while response.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        response = client.get(run_url, **HX)
    html = text(response)
    run = TrainingRun.objects.get()
    why = (run.status, run.stage_failed, run.error_message, run.log_tail[-3000:])
    assert response.status_code == 286, why
    assert re.search(r'badge-lg badge-ok">succeeded<', html), why
    report = section(html, 'class="card validation"', "</section>")
    for label in ("File checks", "Format validation (JSON)", "Loading test", "Inference test"):
        assert label in report
    assert "badge-error" not in report and "<polyline" in html and "step 12 / 12" in html
    assert "step 12/12  loss" in section(html, "<h2>Log", "</section>")  # the trainer's lines, in the log card


def test_the_form_has_a_box_for_every_hyperparameter():
    from projects.forms import ProjectForm
    from projects.hyperparameters import Hyperparameters

    groups = ProjectForm().field_groups()
    boxes = [field.name for group in groups.values() for field in (*group["boxes"], *group["checks"])]
    assert sorted(boxes) == sorted(Hyperparameters.model_fields)


# --- max sequence length above the model's context length -----------------------------------------------------


def test_max_seq_length_above_the_context_length_is_warned_under_its_box(owner, roots, tiny_llama_in_cache):
    response = secure_client(owner).post(
        "/projects/new/", form_data(roots, tiny_llama_in_cache[0], max_seq_length="1024", learning_rate="fast")
    )
    assert response.status_code == 422
    box = section(text(response), 'for="id_max_seq_length"', "</div>")
    assert "warning" in box and "above the context length of &#x27;test-org/tiny-llama&#x27; (512 tokens)" in box
    assert "cuts sequences at 512" in box and "errorlist" not in box


def test_max_seq_length_above_the_context_length_saves_with_a_warning(owner, roots, tiny_llama_in_cache):
    client = secure_client(owner)
    response = client.post("/projects/new/", form_data(roots, tiny_llama_in_cache[0], max_seq_length="1024"))
    project = TrainingProject.objects.get()
    assert response.status_code == 302 and project.hyperparameters["max_seq_length"] == 1024
    page = text(client.get(response["Location"]))
    assert "Max sequence length 1024 is above the context length" in page and "cuts sequences at 512" in page


def test_max_seq_length_within_the_context_length_is_not_warned(owner, roots, tiny_llama_in_cache):
    client = secure_client(owner)
    response = client.post("/projects/new/", form_data(roots, tiny_llama_in_cache[0], max_seq_length="512"))
    assert response.status_code == 302
    assert "above the context length" not in text(client.get(response["Location"]))
    edit = text(client.get(f"{response['Location']}edit/"))
    assert "above the context length" not in section(edit, 'for="id_max_seq_length"', "</div>")
