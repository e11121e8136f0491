"""The DPO trainer child, run as the pipeline runs it (`python -m projects.trainer SPEC.json`) on the CPU with the
tiny Llama: TRL's DPOTrainer behind the portal's events, reference model, held-out pairs, cancel and resume, the
manifest; and the preference check child on what it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from projects.datasets.samples import sample_pairs
from projects.runs.validation.preference_child import run as preference_run
from projects.trainer.events import EXIT_CANCELLED, EXIT_OK
from projects.trainer.spec import TrainerSpec
from tests.test_trainer import run_child, write_rows

pytestmark = pytest.mark.slow

DPO = {
    "objective": "dpo",
    "max_steps": 4,
    "learning_rate": 0.01,
    "batch_size": 4,
    "max_seq_length": 48,
    "logging_steps": 1,
    "save_steps": 1000,
}


def dpo_spec(model: Path, data: Path, out: Path, method: str, held_out: int = 0, **hyper) -> dict:
    return TrainerSpec(
        model_path=model,
        model_name="test-org/tiny-llama",
        dataset_path=data,
        output_dir=out,
        method=method,
        hyperparameters={**DPO, **hyper},
        device="cpu",
        held_out_pairs=held_out,
    ).model_dump(mode="json")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", sample_pairs(20))


def test_lora_dpo_reports_rewards_holds_out_pairs_and_keeps_no_reference_copy(tiny_llama_dir, pairs_file, tmp_path):
    out = tmp_path / "out"
    run = run_child(dpo_spec(tiny_llama_dir, pairs_file, out, "lora", held_out=4), tmp_path / "spec.json")
    assert run.returncode == EXIT_OK, run.log[-3000:]
    started = run.one("started")
    assert started["objective"] == "dpo" and started["reference"] == "base model with the adapter disabled"
    assert (started["dataset_rows"], started["examples"], started["held_out_rows"]) == (20, 16, 4)
    logged = [e for e in run.of("progress") if e["logged"]]
    assert [e["step"] for e in logged] == [1, 2, 3, 4]
    assert all(
        isinstance(e[name], float)
        for e in logged
        for name in ("reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected")
    )
    assert run.one("finished")["metrics"]["real_tokens"] > 0
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert manifest["objective"] == "dpo" and manifest["dpo"]["loss_type"] == "sigmoid"
    assert manifest["dpo"]["reference"] == "base model with the adapter disabled"
    assert manifest["layout"] == {"model_dir": "merged", "adapter_dir": "."}
    assert all("reward_margin" in point for point in manifest["loss_history"])
    # One adapter: TRL was given the LoRA config, so it made no "ref" adapter copy to compare against.
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    assert names and not any(".ref." in name for name in names)
    assert (out / "merged" / "config.json").is_file()


def test_full_dpo_cancels_to_a_checkpoint_and_resumes_with_a_frozen_reference(tiny_llama_dir, pairs_file, tmp_path):
    out, cancel = tmp_path / "out", tmp_path / "cancel-run"
    spec = dpo_spec(tiny_llama_dir, pairs_file, out, "full", max_steps=100_000, logging_steps=50)
    spec["cancel_file"] = str(cancel)

    def cancel_after_first_progress(event, proc):
        if event["event"] == "progress":
            cancel.touch()

    run = run_child(spec, tmp_path / "spec.json", on_event=cancel_after_first_progress)
    assert run.returncode == EXIT_CANCELLED, run.log[-3000:]
    assert run.one("started")["reference"] == "frozen copy of the base model"
    step = run.one("cancelled")["step"]
    assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()

    cancel.unlink()
    spec["resume_from_checkpoint"] = "latest"
    spec["hyperparameters"]["max_steps"] = step + 2
    resumed = run_child(spec, tmp_path / "spec-resume.json")
    assert resumed.returncode == EXIT_OK, resumed.log[-3000:]
    assert resumed.one("started")["global_step"] == step
    assert resumed.one("finished")["metrics"]["global_step"] == step + 2
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert manifest["resumed_from"] == str(out / f"checkpoint-{step}")
    assert manifest["layout"] == {"model_dir": ".", "adapter_dir": None}

    # The preference check on what it left: numbers for the base and the tuned model, from the same pairs.
    held_out = sample_pairs(20)[-4:]
    found = preference_run(
        {
            "base_model_path": str(tiny_llama_dir),
            "model_dir": str(out),
            "adapter_dir": None,
            "tokenizer_dir": str(out),
            "pairs": held_out,
        }
    )
    assert found["pairs"] == 4
    assert all(0.0 <= found[key] <= 1.0 for key in ("before", "after"))
    assert found["margin_before"] != found["margin_after"]  # the tuned model is not the base


def test_a_dataset_that_is_not_pairs_is_an_error_event(tiny_llama_dir, tmp_path):
    qa = write_rows(tmp_path / "qa.jsonl", [{"prompt": "Say hi:", "completion": " hi"}] * 4)
    run = run_child(dpo_spec(tiny_llama_dir, qa, tmp_path / "out", "lora"), tmp_path / "spec.json")
    error = run.one("error")
    assert error["code"] == "dataset_not_pairs" and "preference pairs" in error["message"]
