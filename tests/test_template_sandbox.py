"""A model's chat template renders in a limited child process: one that loops or builds a huge string is that
model's problem, and the web process carries on. Real template files in a copy of the tiny Llama."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile

from projects.datasets import inspect_dataset
from tests.pipeline_helpers import write_jsonl
from tests.token_counts import count_pending, counted

LOOPING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages }}"
HUGE = "{% set s = 'x' * 300000000 %}{{ s }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
CHAT_ROWS = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


@pytest.fixture
def limits(settings):
    settings.MTM_TEMPLATE_CPU_SECONDS = 1
    settings.MTM_TEMPLATE_MEMORY_MB = 128
    return settings


def with_template(model_dir: Path, template: str):
    from transformers import AutoTokenizer

    (model_dir / "chat_template.jinja").write_text(template)
    return AutoTokenizer.from_pretrained(model_dir)


def test_a_looping_template_is_stopped_and_named(tmp_path, copy_of_tiny_llama, limits):
    tokenizer = with_template(copy_of_tiny_llama, LOOPING)
    report = inspect_dataset(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS), tokenizer, 64, model="'org/looping'")
    [problem] = report.errors
    assert problem.code == "chat_template_too_slow"
    assert "chat template of model 'org/looping' took more than 1 s of CPU time" in problem.message
    assert "chat_template" in problem.hint


def test_a_template_building_a_huge_string_is_stopped_without_growing_the_web_process(
    tmp_path, copy_of_tiny_llama, limits
):
    tokenizer = with_template(copy_of_tiny_llama, HUGE)
    before = _rss_kib()
    report = inspect_dataset(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS), tokenizer, 64, model="'org/huge'")
    [problem] = report.errors
    assert problem.code == "chat_template_too_large"
    assert "chat template of model 'org/huge' needed more than 128 MB of memory" in problem.message
    assert _rss_kib() - before < 100 * 1024  # the 300 MB string lived and died in the child


def test_a_good_template_still_renders_through_the_child(tmp_path, tiny_llama_dir, limits):
    from transformers import AutoTokenizer

    report = inspect_dataset(
        write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS), AutoTokenizer.from_pretrained(tiny_llama_dir), 64
    )
    assert report.valid, report.errors
    assert report.token_stats is not None and report.token_stats.total > 0


def test_the_project_check_files_it_under_the_model(portal_roots, hf_cache, copy_of_tiny_llama, limits):
    from models_registry.demo import install_into_cache
    from projects.services import check_project

    (copy_of_tiny_llama / "chat_template.jinja").write_text(LOOPING)
    install_into_cache(copy_of_tiny_llama, hf_cache, "org/looping")
    dataset = write_jsonl(portal_roots / "datasets" / "chat.jsonl", CHAT_ROWS)
    check = check_project(
        {
            "name": "p",
            "model_name": "org/looping",
            "dataset_path": str(dataset),
            "output_directory": str(portal_roots / "outputs" / "p"),
            "method": "lora",
            "hyperparameters": {"max_seq_length": 64},
        }
    )
    assert [p.code for p in check.errors["model_name"]] == ["chat_template_too_slow"]
    assert not check.errors.get("dataset_path")


def test_the_dataset_box_shows_the_models_problem(portal_roots, hf_cache, copy_of_tiny_llama, limits, db):
    from django.contrib.auth.models import User

    from models_registry.demo import install_into_cache
    from tests.clients import secure_client

    (copy_of_tiny_llama / "chat_template.jinja").write_text(HUGE)
    install_into_cache(copy_of_tiny_llama, hf_cache, "org/huge")
    dataset = write_jsonl(portal_roots / "datasets" / "chat.jsonl", CHAT_ROWS)
    client_user = User.objects.create_user("alice")
    client = secure_client(client_user)
    response = client.get(
        "/projects/check-dataset/",
        {"dataset_path": str(dataset), "model_name": "org/huge", "max_seq_length": "64"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = counted(client, response.content.decode(), dataset, client_user)  # the worker renders the template
    assert "status-error" in html
    assert "The chat template of model &#x27;org/huge&#x27; needed more than 128 MB" in html


def test_the_api_upload_names_the_model_field(portal_roots, hf_cache, copy_of_tiny_llama, limits, db):
    from models_registry.demo import install_into_cache
    from tests.api_client import API, make_user_token
    from tests.clients import secure_client

    (copy_of_tiny_llama / "chat_template.jinja").write_text(LOOPING)
    install_into_cache(copy_of_tiny_llama, hf_cache, "org/looping")
    user, token = make_user_token("owner")
    body = "".join(json.dumps(row) + "\n" for row in CHAT_ROWS).encode()

    def upload():
        return secure_client(user).post(
            API + "/datasets",
            {"file": SimpleUploadedFile("chat.jsonl", body), "model_name": "org/looping", "max_seq_length": 64},
            headers={"Authorization": f"Bearer {token}"},
        )

    first = upload()  # the worker renders the template; the same file sent again answers what it found
    assert first.status_code == 200 and first.json()["report"]["token_stats_state"] == "pending", first.content
    count_pending(first.json()["dataset_path"], user)
    response = upload()
    assert response.status_code == 422, response.content
    [error] = response.json()["errors"]
    assert (error["code"], error["field"]) == ("chat_template_too_slow", "model_name")
    assert "'org/looping'" in error["message"]


@pytest.mark.slow
def test_a_looping_template_fails_the_run_at_resolve_on_the_worker(
    portal_roots, hf_cache, copy_of_tiny_llama, start_worker
):
    """The worker's full pass renders the template in limited children too: the run fails, the worker lives."""
    from models_registry.demo import install_into_cache
    from projects.models import RunStage, RunStatus, TrainingProject
    from tests.pipeline_helpers import FAST_HYPERPARAMETERS, start, wait_for_end

    (copy_of_tiny_llama / "chat_template.jinja").write_text(LOOPING)
    install_into_cache(copy_of_tiny_llama, hf_cache, "org/looping")
    user = User.objects.create_user("alice")
    project = TrainingProject.objects.create(  # saved as it was before the template changed under it
        name="looping",
        owner=user,
        model_name="org/looping",
        dataset_path=str(write_jsonl(portal_roots / "datasets" / "chat.jsonl", CHAT_ROWS * 3)),
        output_directory=str(portal_roots / "outputs" / "looping"),
        method="full",
        hyperparameters=FAST_HYPERPARAMETERS,
    )
    start_worker(extra_env={"MTM_TEMPLATE_CPU_SECONDS": "1"}).wait_ready()
    run = wait_for_end(start(project, user).pk)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.RESOLVE
    assert run.error_code == "chat_template_too_slow" and "'org/looping'" in run.error_message
    assert not (portal_roots / "outputs" / "looping").exists()
    again = wait_for_end(start(project, user).pk)  # the same worker answers the next run
    assert again.status == RunStatus.FAILED and again.error_code == "chat_template_too_slow"
