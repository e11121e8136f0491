"""Training runs end to end: a real worker on the real Redis broker, the real trainer on the CPU, the tiny Llama in
a temp HF cache. Nothing of ours is mocked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from projects.models import RunStage, RunStatus, TrainingProject
from projects.runs.services import RunRefused
from projects.runs.state_machine import CancelOutcome
from tests.pipeline_helpers import (
    FAST_HYPERPARAMETERS,
    QA_ROWS,
    cancel,
    start,
    wait_for_end,
    wait_until_a_worker_reports,
    write_jsonl,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def portal(portal_roots, transactional_db):
    return {"user": User.objects.create_user("alice", password="x"), "root": portal_roots}


def make_project(portal, model_name, *, method="full", rows=None, hyper=None, name="p", **extra):
    root = portal["root"]
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", (rows or QA_ROWS) * 8)
    return TrainingProject.objects.create(
        name=name,
        owner=portal["user"],
        model_name=model_name,
        dataset_path=str(dataset),
        output_directory=str(root / "outputs" / name),
        method=method,
        hyperparameters={**FAST_HYPERPARAMETERS, **(hyper or {})},
        **extra,
    )


@pytest.mark.database
def test_full_fine_tune_succeeds_and_is_proven_to_work(portal, tiny_llama_in_cache, celery_worker):
    name, snapshot = tiny_llama_in_cache
    project = make_project(portal, name, validation_prompt="Say hello:")
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    assert run.resolved_source == "cache" and run.resolved_path == str(snapshot)
    assert run.device == "cpu"
    losses = [m["loss"] for m in run.metrics]
    assert len(losses) >= 5 and losses[-1] < losses[0]
    assert run.progress["step"] == run.progress["total_steps"] == 12
    checks = {c["name"]: c for c in run.validation["checks"]}
    assert list(checks) == ["files", "json", "load", "inference"]
    assert all(c["passed"] for c in checks.values()), checks
    assert run.validation["prompt"] == "Say hello:"
    assert run.validation["sample_output"] != ""
    out = Path(run.output_directory)  # the run's own folder inside the project's output directory
    assert out == portal["root"] / "outputs" / "p" / f"run-{run.pk}"
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert manifest["base_model"] == {"name": name, "revision": snapshot.name, "path": str(snapshot)}
    import hashlib

    assert manifest["dataset"]["sha256"] == hashlib.sha256(Path(project.dataset_path).read_bytes()).hexdigest()
    assert manifest["hyperparameters"]["max_steps"] == 12 and manifest["metrics"]["final_loss"] == losses[-1]
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    ids = tok("Say hello:", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_two_runs_of_one_project_keep_their_own_files(portal, tiny_llama_in_cache, celery_worker):
    """The second run's checkpoint rotation and final save touch nothing of the first run's."""
    hyper = {"max_steps": 4, "save_steps": 2, "save_total_limit": 1}
    project = make_project(portal, tiny_llama_in_cache[0], name="twice", hyper=hyper, validation_prompt="Say hello:")
    first = wait_for_end(start(project, portal["user"]).pk)
    assert first.status == RunStatus.SUCCEEDED, (first.error_message, first.log_tail[-3000:])
    first_files = {
        path.relative_to(first.output_directory): path.read_bytes()
        for path in Path(first.output_directory).rglob("*")
        if path.is_file()
    }
    assert Path("checkpoint-4/trainer_state.json") in first_files and Path("mtm_manifest.json") in first_files
    second = wait_for_end(start(project, portal["user"]).pk)
    assert second.status == RunStatus.SUCCEEDED, (second.error_message, second.log_tail[-3000:])
    assert second.output_directory != first.output_directory
    assert {
        path.relative_to(first.output_directory): path.read_bytes()
        for path in Path(first.output_directory).rglob("*")
        if path.is_file()
    } == first_files
    assert (Path(second.output_directory) / "checkpoint-4").is_dir()
    assert not (Path(project.output_directory) / "mtm_manifest.json").exists()  # nothing at the top any more


def test_lora_with_merge(portal, tiny_llama_in_cache, celery_worker):
    project = make_project(
        portal,
        tiny_llama_in_cache[0],
        method="lora",
        name="lora",
        # Enough training for the adapter to answer in words: the inference test fails garbled text.
        hyper={"merge_after_training": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 0.05, "max_steps": 24},
    )
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    out = Path(run.output_directory)
    assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    assert all(c["passed"] for c in run.validation["checks"])


def test_chat_messages_dataset(portal, tiny_llama_in_cache, celery_worker):
    rows = [{"messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello world!"}]}]
    project = make_project(portal, tiny_llama_in_cache[0], rows=rows, name="chat")
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    # No validation prompt on the project: the dataset's first prompt, rendered with the chat template, is used.
    assert run.validation["prompt"].startswith("<|user|>\nSay hello")


def test_missing_model_fails_at_resolve_having_trained_nothing(portal, tiny_llama_in_cache, celery_worker):
    name, snapshot = tiny_llama_in_cache
    project = make_project(portal, name, name="vanished")
    wait_until_a_worker_reports(name)
    shutil.rmtree(snapshot.parent.parent)  # the model is deleted from the cache after the project was made
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.RESOLVE
    assert run.error_code == "model_not_found"
    assert run.error_message.startswith(f"Model '{name}' not found. Please ensure the model is downloaded")
    assert "hf download" in run.error_hint
    assert run.progress == {} and run.metrics == []
    assert not (portal["root"] / "outputs" / "vanished").exists()


def test_weights_gone_to_gguf_fail_at_resolve_naming_the_file(portal, hf_cache, tiny_llama_in_cache, celery_worker):
    from tests.hfcache import add_file

    name, snapshot = tiny_llama_in_cache
    project = make_project(portal, name, name="gguf")
    wait_until_a_worker_reports(name)
    (snapshot / "model.safetensors").unlink()  # only a GGUF conversion left after the project was saved
    add_file(hf_cache, name, "tiny.Q4_K_M.gguf", b"GGUF\x03\x00\x00\x00", commit=snapshot.name)
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.RESOLVE
    assert run.error_code == "no_weights" and "only GGUF weights (tiny.Q4_K_M.gguf)" in run.error_message
    assert run.metrics == [] and not (portal["root"] / "outputs" / "gguf").exists()


def test_a_bad_row_past_the_forms_sample_fails_the_run_at_resolve_naming_it(portal, tiny_llama_in_cache, celery_worker):
    from mtm.audit import Actor, Channel
    from projects.datasets.loading import SAMPLE_ROWS
    from projects.services import create_project

    rows = [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(SAMPLE_ROWS + 10)]
    rows[SAMPLE_ROWS + 4] = {"prompt": "a row without its completion"}
    dataset = write_jsonl(portal["root"] / "datasets" / "long.jsonl", rows)
    project = create_project(  # the save check reads only the start of the file, so it accepts it
        {
            "name": "long",
            "model_name": tiny_llama_in_cache[0],
            "dataset_path": str(dataset),
            "output_directory": str(portal["root"] / "outputs" / "long"),
            "method": "full",
            "hyperparameters": FAST_HYPERPARAMETERS,
        },
        actor=Actor(portal["user"], Channel.CLI),
    )
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.RESOLVE
    assert run.error_code == "dataset_unknown_format"
    assert run.error_message.startswith(f"Row {SAMPLE_ROWS + 5} (line {SAMPLE_ROWS + 5})"), run.error_message
    assert run.progress == {} and not (portal["root"] / "outputs" / "long").exists()


def test_training_crash_fails_the_run_and_the_worker_keeps_serving(portal, tiny_llama_in_cache, celery_worker):
    # A learning rate the hyperparameter check refuses only inside the child: the child reports and exits 1.
    project = make_project(portal, tiny_llama_in_cache[0], name="crash", hyper={"learning_rate": -1})
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.FAILED and run.stage_failed == RunStage.TRAIN, run.error_message
    assert "learning_rate" in run.error_message
    ok = make_project(portal, tiny_llama_in_cache[0], name="after-crash")
    assert wait_for_end(start(ok, portal["user"]).pk).status == RunStatus.SUCCEEDED


def test_cancel_mid_run_then_resume_from_checkpoint(portal, tiny_llama_in_cache, celery_worker):
    project = make_project(
        portal,
        tiny_llama_in_cache[0],
        name="cancel",
        hyper={"max_steps": 400, "save_steps": 1000, "learning_rate": 0.001},
    )
    run = start(project, portal["user"])
    wait_for_end(run.pk, until=lambda r: (r.progress or {}).get("step", 0) >= 3)
    run.refresh_from_db()
    assert cancel(run, portal["user"]) is CancelOutcome.REQUESTED
    run = wait_for_end(run.pk)
    assert run.status == RunStatus.CANCELLED, (run.error_message, run.log_tail[-2000:])
    assert run.last_checkpoint and "checkpoint-" in run.last_checkpoint
    stopped_at = int(run.last_checkpoint.rsplit("-", 1)[1])
    assert 3 <= stopped_at < 400
    assert run.progress["step"] == stopped_at  # the step shown is the checkpoint's

    project.hyperparameters = {**project.hyperparameters, "max_steps": stopped_at + 4}
    project.save()
    resumed = wait_for_end(start(project, portal["user"], resume=True).pk)
    assert resumed.status == RunStatus.SUCCEEDED, (resumed.error_message, resumed.log_tail[-3000:])
    assert resumed.resumed_from.endswith(f"checkpoint-{stopped_at}")
    assert resumed.resumed_from.startswith(run.output_directory + "/")  # the cancelled run's own checkpoint
    assert resumed.output_directory != run.output_directory
    # The chart shows the whole history: the cancelled run's points up to its checkpoint, then the new ones.
    inherited = [m for m in resumed.metrics if m["step"] <= stopped_at]
    assert inherited == [m for m in run.metrics if m["step"] <= stopped_at] and inherited
    assert min(m["step"] for m in resumed.metrics if m not in inherited) > stopped_at
    assert resumed.progress["step"] == resumed.progress["total_steps"] == stopped_at + 4


@pytest.mark.database
def test_two_live_runs_on_one_output_directory_are_refused(portal, tiny_llama_in_cache):
    project = make_project(portal, tiny_llama_in_cache[0], name="busy")
    from projects.models import TrainingRun

    TrainingRun.objects.create(project=project, status=RunStatus.TRAINING, output_directory=project.output_directory)
    with pytest.raises(RunRefused) as refused:
        start(project, portal["user"])
    assert refused.value.problem.code == "output_directory_busy"


def test_resume_whose_checkpoint_vanished_after_start_fails_instead_of_starting_fresh(
    portal, tiny_llama_in_cache, celery_worker
):
    from projects.models import TrainingRun
    from projects.runs.services import enqueue

    project = make_project(portal, tiny_llama_in_cache[0], name="vanished")
    # Start accepted the resume while checkpoint-4 was there; it was deleted before the worker got to it.
    run = TrainingRun.objects.create(project=project, resume=True, output_directory=project.output_directory)
    assert enqueue(run.pk)
    run = wait_for_end(run.pk)
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, RunStage.TRAIN, "no_checkpoint")
    assert "Cannot resume" in run.error_message and run.metrics == []
    assert not Path(project.output_directory, "mtm_manifest.json").exists()


def test_a_messages_file_trains_on_a_base_model_with_the_chatml_template(
    portal, hf_cache, tmp_path_factory, celery_worker
):
    from models_registry.demo import build_tiny_llama, install_into_cache
    from mtm.audit import Actor, Channel
    from projects.services import ProjectInvalid, create_project

    base = build_tiny_llama(tmp_path_factory.mktemp("base") / "model", chat_template=False)
    install_into_cache(base, hf_cache, "test-org/tiny-base")
    rows = [{"messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello world!"}]}]
    data = {
        "name": "chatml",
        "model_name": "test-org/tiny-base",
        "dataset_path": str(write_jsonl(portal["root"] / "datasets" / "chat.jsonl", rows * 8)),
        "output_directory": str(portal["root"] / "outputs" / "chatml"),
        "method": "full",
        "hyperparameters": FAST_HYPERPARAMETERS,
    }
    actor = Actor(portal["user"], Channel.CLI)
    with pytest.raises(ProjectInvalid) as refused:  # the model's own template: it has none
        create_project(data, actor=actor)
    assert [p.code for p in refused.value.check.errors["dataset_path"]] == ["no_chat_template"]
    project = create_project(
        {**data, "hyperparameters": {**FAST_HYPERPARAMETERS, "chat_template": "chatml"}}, actor=actor
    )
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    assert run.validation["prompt"] == "<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\n"
    saved = json.loads((Path(run.output_directory) / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in (
        saved.get("chat_template") or (Path(run.output_directory) / "chat_template.jinja").read_text()
    )
