"""Project creation refuses what would fail later: model, output directory, dataset and hyperparameters."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from mtm.audit import Actor, Channel
from projects.services import ProjectInvalid, check_project, create_project, update_project
from tests.pipeline_helpers import QA_ROWS, write_jsonl


@pytest.fixture
def roots(portal_roots):
    return portal_roots


def data(roots, model_name, **changes):
    base = {
        "name": "demo",
        "model_name": model_name,
        "dataset_path": str(write_jsonl(roots / "datasets" / "qa.jsonl", QA_ROWS)),
        "output_directory": str(roots / "outputs" / "demo"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 16},
    }
    return {**base, **changes}


def as_cli(user) -> Actor:
    return Actor(user, Channel.CLI)


ACTOR = Actor(None, Channel.CLI)


def codes(check, field):
    return [p.code for p in check.errors.get(field, [])]


def test_valid_project_is_created_with_dataset_facts(roots, tiny_llama_in_cache):
    owner = User.objects.create_user("bob")
    project = create_project(data(roots, tiny_llama_in_cache[0]), actor=as_cli(owner))
    assert project.dataset_format == "prompt_completion" and len(project.dataset_sha256) == 64
    assert project.hyperparameters["max_steps"] == 5 and project.hyperparameters["lora_r"] == 16


def test_missing_model_is_refused_with_the_resolver_message(roots):
    check = check_project(data(roots, "meta-llama/Llama-3.2-3B-Instruct"))
    assert codes(check, "model_name") == ["model_not_found"]
    with pytest.raises(ProjectInvalid) as refused:
        create_project(data(roots, "meta-llama/Llama-3.2-3B-Instruct"), actor=as_cli(User.objects.create_user("c")))
    assert "Model 'meta-llama/Llama-3.2-3B-Instruct' not found. Please ensure the model is downloaded" in str(
        refused.value
    )


def test_output_outside_roots_and_bad_dataset_row_are_refused(roots, tiny_llama_in_cache):
    bad = roots / "datasets" / "bad.jsonl"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": 7}\n')
    check = check_project(data(roots, tiny_llama_in_cache[0], output_directory="/etc/mtm", dataset_path=str(bad)))
    assert codes(check, "output_directory") == ["outside_allowed_roots"]
    [problem] = check.errors["dataset_path"]
    assert "Row 2" in problem.message and "completion" in problem.message


def test_chat_rows_need_a_chat_template(roots, hf_cache, tmp_path):
    from models_registry.demo import build_tiny_llama, install_into_cache

    install_into_cache(build_tiny_llama(tmp_path / "plain", chat_template=False), hf_cache, "org/plain")
    chat = write_jsonl(
        roots / "datasets" / "chat.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    )
    check = check_project(data(roots, "org/plain", dataset_path=str(chat)))
    assert codes(check, "dataset_path") == ["no_chat_template"]


def test_model_without_weights_is_refused(roots, hf_cache):
    from tests.hfcache import make_model_repo

    make_model_repo(hf_cache, "org/no-weights", weights=False)
    assert codes(check_project(data(roots, "org/no-weights")), "model_name") == ["no_weights"]


def test_model_with_only_gguf_weights_is_refused_naming_the_file(roots, hf_cache):
    from tests.hfcache import add_file, make_model_repo

    make_model_repo(hf_cache, "org/gguf", weights=False)
    add_file(hf_cache, "org/gguf", "model.Q4_K_M.gguf", b"GGUF\x03\x00\x00\x00")
    check = check_project(data(roots, "org/gguf"))
    assert codes(check, "model_name") == ["no_weights"]
    [problem] = check.errors["model_name"]
    assert "only GGUF weights (model.Q4_K_M.gguf)" in problem.message and "not its GGUF" in problem.hint


def test_hyperparameter_errors_name_the_field(roots, tiny_llama_in_cache):
    check = check_project(data(roots, tiny_llama_in_cache[0], hyperparameters={"learning_rate": -1, "bogus": 1}))
    messages = " ".join(p.message for p in check.errors["hyperparameters"])
    assert "learning_rate" in messages and "bogus" in messages


def test_update_checks_the_whole_project_again(roots, tiny_llama_in_cache):
    project = create_project(data(roots, tiny_llama_in_cache[0]), actor=as_cli(User.objects.create_user("d")))
    with pytest.raises(ProjectInvalid):
        update_project(project, {"model_name": "org/missing"}, actor=ACTOR)
    project.refresh_from_db()
    assert project.model_name == tiny_llama_in_cache[0]
    update_project(project, {"hyperparameters": {"max_steps": 9}}, actor=ACTOR)
    project.refresh_from_db()
    assert project.hyperparameters["max_steps"] == 9 and project.hyperparameters["max_seq_length"] == 16


def test_form_strings_for_unset_warmup_are_not_both_set(roots, tiny_llama_in_cache):
    check = check_project(
        data(roots, tiny_llama_in_cache[0], hyperparameters={"warmup_ratio": "0.0", "warmup_steps": "0"})
    )
    assert check.errors.get("hyperparameters") is None
    both = check_project(
        data(roots, tiny_llama_in_cache[0], hyperparameters={"warmup_ratio": "0.1", "warmup_steps": "5"})
    )
    assert "both set" in both.errors["hyperparameters"][0].message


def test_training_fields_are_frozen_while_a_run_is_live(roots, tiny_llama_in_cache):
    from projects.models import RunStatus, TrainingRun

    project = create_project(data(roots, tiny_llama_in_cache[0]), actor=as_cli(User.objects.create_user("e")))
    run = TrainingRun.objects.create(project=project, status=RunStatus.TRAINING)
    with pytest.raises(ProjectInvalid) as refused:
        update_project(project, {"hyperparameters": {"max_steps": 50}, "name": "renamed"}, actor=ACTOR)
    [problem] = refused.value.check.errors["hyperparameters"]
    assert problem.code == "run_in_progress" and f"Run {run.pk}" in problem.message
    update_project(
        project, {"name": "renamed", "validation_prompt": "Hi"}, actor=ACTOR
    )  # harmless changes still go through
    project.refresh_from_db()
    assert project.name == "renamed" and project.hyperparameters["max_steps"] == 5
