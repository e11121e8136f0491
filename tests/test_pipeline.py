"""Training runs end to end: a real worker on the real Redis broker, the real trainer on the CPU, the tiny Llama in
a temp HF cache. Nothing of ours is mocked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from projects.models import RunStage, RunStatus
from projects.runs.services import RunRefused
from tests.pipeline_helpers import (
    FAST_HYPERPARAMETERS,
    make_project,
    start,
    wait_for_end,
    wait_until_a_worker_reports,
    write_jsonl,
)

pytestmark = pytest.mark.slow


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
    out = Path(run.run_folder)  # the run's own folder inside the project's output directory
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


@pytest.mark.database
def test_two_live_runs_on_one_output_directory_are_refused(portal, tiny_llama_in_cache):
    project = make_project(portal, tiny_llama_in_cache[0], name="busy")
    from projects.models import TrainingRun

    TrainingRun.objects.create(project=project, status=RunStatus.TRAINING, run_folder=project.output_directory)
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
    run = TrainingRun.objects.create(project=project, resume=True, run_folder=project.output_directory)
    assert enqueue(run.pk)
    run = wait_for_end(run.pk)
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, RunStage.TRAIN, "no_checkpoint")
    assert "Cannot resume" in run.error_message and run.metrics == []
    assert not Path(project.output_directory, "mtm_manifest.json").exists()
