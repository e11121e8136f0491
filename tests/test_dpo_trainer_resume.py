"""The DPO trainer child, run as the pipeline runs it (`python -m projects.trainer SPEC.json`) on the CPU with the
tiny Llama: a full DPO run cancelled to a checkpoint and resumed, its reference model frozen throughout."""

from __future__ import annotations

import json

import pytest

from projects.datasets.samples import sample_pairs
from projects.runs.validation.preference_child import run as preference_run
from projects.trainer.events import EXIT_OK
from tests.dpo_helpers import dpo_spec
from tests.trainer_helpers import run_child, run_until_cancelled

pytestmark = pytest.mark.slow


def test_full_dpo_cancels_to_a_checkpoint_and_resumes_with_a_frozen_reference(tiny_llama_dir, pairs_file, tmp_path):
    out = tmp_path / "out"
    spec = dpo_spec(tiny_llama_dir, pairs_file, out, "full", max_steps=100_000, logging_steps=50)
    run = run_until_cancelled(spec, tmp_path)
    assert run.one("started")["reference"] == "frozen copy of the base model"
    step = run.one("cancelled")["step"]
    assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()

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
