"""The trainer child process, run exactly as the pipeline runs it (`python -m projects.trainer SPEC.json`), on the
CPU with the tiny Llama: a full fine-tune and a LoRA run merged after training, and what each leaves."""

from __future__ import annotations

import json

import pytest

from projects.trainer.events import EXIT_OK
from tests.trainer_helpers import generates, make_spec, run_child


@pytest.mark.slow
def test_full_fine_tune_learns_and_leaves_a_complete_model(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    run = run_child(make_spec(tiny_llama_dir, qa_data, out), tmp_path / "spec.json")

    assert run.returncode == EXIT_OK, run.log[-3000:]
    started = run.one("started")
    assert started["device"] == "cpu" and started["total_steps"] == 20 and started["global_step"] == 0
    assert started["examples"] == 40 and started["format"] == "prompt_completion"
    logged = [e for e in run.of("progress") if e["logged"]]
    assert [e["step"] for e in logged] == [5, 10, 15, 20]  # logging_steps=5: the points of the loss curve
    losses = [e["loss"] for e in logged]
    assert losses[-1] < losses[0] * 0.7
    steps = [e["step"] for e in run.of("progress")]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 20
    assert all(e["tokens_per_second"] > 0 for e in run.of("progress"))

    finished = run.one("finished")
    assert finished["model_dir"] == str(out) and finished["adapter_dir"] is None
    assert finished["metrics"]["global_step"] == 20 and finished["metrics"]["real_tokens"] > 0
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "mtm_manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert manifest["base_model"]["name"] == "test-org/tiny-llama"
    assert manifest["base_model"]["revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert len(manifest["dataset"]["sha256"]) == 64
    assert manifest["hyperparameters"]["max_steps"] == 20
    assert set(manifest["versions"]) >= {"torch", "transformers", "peft"}
    assert manifest["metrics"]["final_loss"] == losses[-1]
    assert manifest["started_at"] <= manifest["finished_at"]
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    assert "four" in generates(out)


@pytest.mark.slow
def test_lora_with_merge_writes_adapter_and_merged_model(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    spec = make_spec(tiny_llama_dir, qa_data, out, method="lora", max_steps=6, lora_r=4, lora_alpha=8)
    spec["hyperparameters"].update(packing=True, gradient_checkpointing=True, merge_after_training=True)
    run = run_child(spec, tmp_path / "spec.json")

    assert run.returncode == EXIT_OK, run.log[-3000:]
    assert run.one("started")["training_rows"] < 40  # packed
    finished = run.one("finished")
    assert finished["adapter_dir"] == str(out) and finished["model_dir"] == str(out / "merged")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "config.json").exists()  # the adapter folder is not mistaken for a full model
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(tiny_llama_dir)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "merged" / name).is_file(), name
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert manifest["layout"] == {"model_dir": "merged", "adapter_dir": "."}
    generates(out / "merged")
