"""The DPO trainer child, run as the pipeline runs it (`python -m projects.trainer SPEC.json`) on the CPU with the
tiny Llama: TRL's DPOTrainer behind the portal's events, reference model, held-out pairs, the manifest; and the
preference check child on what it leaves. test_dpo_trainer_resume.py cancels and resumes it."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from projects.trainer.events import EXIT_OK
from tests.dpo_helpers import dpo_spec
from tests.trainer_helpers import run_child, write_rows

pytestmark = pytest.mark.slow


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


def test_a_dataset_that_is_not_pairs_is_an_error_event(tiny_llama_dir, tmp_path):
    qa = write_rows(tmp_path / "qa.jsonl", [{"prompt": "Say hi:", "completion": " hi"}] * 4)
    run = run_child(dpo_spec(tiny_llama_dir, qa, tmp_path / "out", "lora"), tmp_path / "spec.json")
    error = run.one("error")
    assert error["code"] == "dataset_not_pairs" and "preference pairs" in error["message"]
