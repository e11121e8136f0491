"""The trainer child process, run exactly as the pipeline runs it (`python -m projects.trainer SPEC.json`), on the
CPU with the tiny Llama: a cancelled run resumed from its checkpoint, and a resume with nothing left to train."""

from __future__ import annotations

import json

import pytest

from projects.trainer.events import EXIT_OK
from tests.trainer_helpers import error_of, make_spec, run_child, run_until_cancelled


@pytest.mark.slow
def test_cancel_saves_a_checkpoint_and_resume_latest_continues_from_it(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    # Far more steps than can pass before the cancel file appears, so the run cannot finish first.
    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=100_000, logging_steps=50)
    run = run_until_cancelled(spec, tmp_path)
    cancelled = run.one("cancelled")
    step = cancelled["step"]
    assert 1 <= step < 100_000
    assert cancelled["checkpoint"] == str(out / f"checkpoint-{step}")
    assert run.one("checkpoint")["path"] == cancelled["checkpoint"]
    assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not run.of("finished") and not (out / "mtm_manifest.json").exists()

    spec["resume_from_checkpoint"] = "latest"
    spec["hyperparameters"]["max_steps"] = step + 8  # a shorter finish line; the state still comes from the checkpoint
    resumed = run_child(spec, tmp_path / "spec-resume.json")
    assert resumed.returncode == EXIT_OK, resumed.log[-3000:]
    started = resumed.one("started")
    assert started["global_step"] == step
    assert started["resumed_from"] == str(out / f"checkpoint-{step}")
    assert resumed.of("progress")[0]["step"] == step + 1
    assert resumed.one("finished")["metrics"]["global_step"] == step + 8
    assert json.loads((out / "mtm_manifest.json").read_text())["resumed_from"] == started["resumed_from"]


def test_resume_from_a_checkpoint_at_the_last_step_is_refused(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=2, save_steps=2)
    assert run_child(spec, tmp_path / "spec.json").returncode == EXIT_OK
    spec["resume_from_checkpoint"] = "latest"  # the same max_steps: nothing is left to train
    resumed = run_child(spec, tmp_path / "spec-resume.json")
    error = error_of(resumed)
    assert error["code"] == "nothing_to_resume"
    assert error["message"] == "Nothing left to train: checkpoint-2 is already at step 2, and this run ends at step 2."
    assert not resumed.of("started") and not resumed.of("finished")
