"""Evaluation during training and before/after validation, for real: the tiny Llama trains in the trainer child
(and, for the pipeline, on a real worker over the real Redis broker), evaluates its seeded eval set, keeps its best
checkpoint when asked, and the validation child answers eval prompts with the base and the fine-tuned model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from projects.datasets.eval_split import describe_split, eval_indices, reference_answer, split_rows
from projects.models import RunStatus, TrainingProject
from projects.trainer.events import event_line, parse_event
from projects.trainer.spec import TrainerSpec, write_spec
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, start, wait_for_end, write_jsonl
from tests.trained_runs import copy_trained_run

# --- the split ---------------------------------------------------------------------------------------------------


def test_the_eval_split_is_seeded_stated_and_never_takes_every_row():
    assert eval_indices(40, 0.25, 42) == eval_indices(40, 0.25, 42) != eval_indices(40, 0.25, 7)
    assert len(eval_indices(40, 0.25, 42)) == 10 and eval_indices(40, 0.0, 42) == []
    assert len(eval_indices(2, 0.5, 1)) == 1 and eval_indices(1, 0.5, 1) == []  # a row is always left to train on
    train, held = split_rows(list(range(20)), 0.1, 3)
    assert sorted(train + held) == list(range(20)) and len(held) == 2 and not set(train) & set(held)
    assert describe_split(40, 0.25, 42) == "10 of 40 rows (25%), picked with seed 42, held out of training"
    assert reference_answer({"prompt": "p", "completion": " c"}, "prompt_completion") == " c"
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert reference_answer(chat, "messages") == "hello" and reference_answer({"text": "t"}, "text") is None


def test_an_evaluation_event_reads_as_a_log_line():
    event = parse_event('MTM_EVENT {"event":"evaluation","step":4,"eval_loss":2.5,"perplexity":12.18}')
    assert event_line(event) == "eval at step 4: eval loss 2.5000, perplexity 12.18"


# --- the trainer child -------------------------------------------------------------------------------------------


def _events(stdout: str) -> list[dict]:
    return [event for line in stdout.splitlines() if (event := parse_event(line)) is not None]


def test_the_trainer_evaluates_and_keeps_the_best_checkpoint_as_the_result(tmp_path, tiny_llama_dir):
    """Eval every step with a high learning rate, so the eval loss goes up and down: the result must be the weights
    of the step with the lowest eval loss, whichever it is, and that checkpoint survives rotation (limit 1)."""
    import subprocess

    from safetensors.torch import load_file

    from projects.trainer.events import trainer_command

    rows = [{"prompt": f"Question {i}: add one to {i}.", "completion": f" {i + 1}"} for i in range(24)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    out = tmp_path / "out"
    hyper = {
        **FAST_HYPERPARAMETERS,
        "max_steps": 5,
        "learning_rate": 0.5,
        "save_steps": 100,
        "save_total_limit": 1,
        "eval_fraction": 0.25,
        "eval_steps": 1,
        "keep_best_eval": True,
    }
    spec = TrainerSpec(
        model_path=tiny_llama_dir, model_name="t/tiny", dataset_path=data, output_dir=out, method="full",
        hyperparameters=hyper, device="cpu",
    )  # fmt: skip
    proc = subprocess.run(
        trainer_command(write_spec(spec, tmp_path / "spec.json")),
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**__import__("os").environ, "MTM_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = _events(proc.stdout)
    started = next(e for e in events if e["event"] == "started")
    assert started["eval_rows"] == 6 and started["dataset_rows"] == 24
    evaluations = [e for e in events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [1, 2, 3, 4, 5]
    assert all(math.isclose(e["perplexity"], math.exp(e["eval_loss"]), rel_tol=1e-6) for e in evaluations)
    best = min(evaluations, key=lambda e: e["eval_loss"])
    metrics = next(e for e in events if e["event"] == "finished")["metrics"]
    assert metrics["best_eval_step"] == best["step"] == metrics["result_step"]
    assert metrics["eval_loss"] == evaluations[-1]["eval_loss"]
    kept = out / f"checkpoint-{best['step']}"
    assert kept.is_dir(), sorted(p.name for p in out.iterdir())  # the best survives save_total_limit=1
    result, best_weights = load_file(out / "model.safetensors"), load_file(kept / "model.safetensors")
    assert result.keys() == best_weights.keys()
    assert all((result[name] == best_weights[name]).all() for name in result)
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert [point["step"] for point in manifest["eval_history"]] == [1, 2, 3, 4, 5]


# --- the pipeline, the run page, the report and the comparison -------------------------------------------------


def _project(portal, model_name: str, name: str, hyper: dict) -> TrainingProject:
    root = portal["root"]
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", QA_ROWS * 8)  # 24 rows, three kinds
    return TrainingProject.objects.create(
        name=name,
        owner=portal["user"],
        model_name=model_name,
        dataset_path=str(dataset),
        output_directory=str(root / "outputs" / name),
        method="lora",
        hyperparameters={**FAST_HYPERPARAMETERS, "max_steps": 8, "learning_rate": 0.02, **hyper},
    )


@pytest.mark.slow
def test_a_run_with_an_eval_set_shows_both_curves_base_vs_tuned_and_compares(
    portal, tiny_llama_in_cache, trained_full_run, celery_worker
):
    """The run with an eval set is the session's full fine-tune (tests.trained_runs.FULL, trained by a real worker
    with these settings), copied as alice's; the plain LoRA run trains here."""
    name, _ = tiny_llama_in_cache
    assert trained_full_run.project["hyperparameters"] == {
        **FAST_HYPERPARAMETERS, "max_steps": 8, "learning_rate": 0.02, "eval_fraction": 0.25, "eval_steps": 4,
        "eval_prompts": 2,
    }  # fmt: skip
    plain = _project(portal, name, "plain", {"learning_rate": 0.01, "eval_prompts": 0})
    first = copy_trained_run(trained_full_run, portal["user"], portal["root"])
    second = wait_for_end(start(plain, portal["user"]).pk)
    for run in (first, second):
        assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])

    # 1. eval loss and perplexity every 4 steps (and at the last), stored beside the training loss
    evals = [point for point in first.metrics if "eval_loss" in point]
    assert [point["step"] for point in evals] == [4, 8]
    assert all(point["perplexity"] == pytest.approx(math.exp(point["eval_loss"])) for point in evals)
    assert first.summary["eval_loss"] == evals[-1]["eval_loss"] and first.summary["result_step"] == 8
    assert first.config["dataset_rows"] == 24 and "eval at step 4: eval loss" in first.log_tail
    assert not any("eval_loss" in point for point in second.metrics)
    client = secure_client(portal["user"])
    page = client.get(f"/projects/runs/{first.pk}/").content.decode()
    assert '<polyline class="line"' in page and '<polyline class="eval-line"' in page
    assert "6 of 23 rows (25%), picked with seed 42, held out of training" in page
    assert "the model of the last step (8)" in page

    # 2. the validation report: base vs fine-tuned answers to two eval prompts, with the dataset's answers
    before_after = first.validation["before_after"]
    assert first.validation["passed"] and before_after["eval_rows"] == 6
    assert len(before_after["pairs"]) == 2
    references = {row["prompt"]: row["completion"] for row in QA_ROWS}
    for pair in before_after["pairs"]:
        assert pair["reference"] == references[pair["prompt"]]
        assert isinstance(pair["base"], str) and isinstance(pair["tuned"], str)
    assert before_after["tuned_eval_loss"] < before_after["base_eval_loss"]  # training on these kinds of rows helps
    # The report's fine-tuned eval loss is the run's last eval point: the same rows batched alike (a LoRA run's
    # merge may round).
    assert before_after["tuned_eval_loss"] == pytest.approx(evals[-1]["eval_loss"], rel=2e-5)
    assert 'class="table compact before-after"' in page and 'class="base-eval-loss"' in page
    # Without eval prompts or an eval set, nothing is compared (the run trains on every row)
    assert second.validation["before_after"] is None

    # 3. the two runs side by side, on the page and in the API
    compare = client.get(f"/projects/runs/compare/?runs={first.pk},{second.pk}")
    assert compare.status_code == 200
    html = compare.content.decode()
    assert html.count("<polyline") == 3  # two training curves and one eval curve
    for label in ("Learning rate", "Eval set (share of the rows)", "Before/after prompts"):
        assert label in html
    _, token = make_user_token("bob")
    body = call(secure_client(), "get", f"/runs/compare?runs={first.pk},{second.pk}", token=token).json()
    assert body["runs"][0]["eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
    assert body["runs"][0]["validation"]["before_after"]["pairs"][0]["reference"] is not None
    assert body["runs"][1]["tokens_per_second"] > 0 and body["runs"][1]["duration_seconds"] > 0
