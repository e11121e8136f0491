"""The trainer child process, run exactly as the pipeline runs it (`python -m projects.trainer SPEC.json`), on the
CPU with the tiny Llama: a SIGTERM or a cancel during an evaluation pass stops it as a cancel does."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from projects.trainer.events import EXIT_CANCELLED
from tests.trainer_helpers import QA, make_spec, run_child, write_rows


@pytest.mark.slow
def test_sigterm_stops_like_a_cancel(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"

    def terminate_after_first_progress(event, proc):
        if event["event"] == "progress" and event["step"] == 1:
            proc.send_signal(signal.SIGTERM)

    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=100_000, logging_steps=50)
    run = run_child(spec, tmp_path / "spec.json", on_event=terminate_after_first_progress)
    assert run.returncode == EXIT_CANCELLED, run.log[-3000:]
    assert Path(run.one("cancelled")["checkpoint"]).is_dir()


@pytest.mark.slow
def test_a_cancel_stops_a_long_evaluation_pass_between_batches(tiny_llama_dir, qa_data, tmp_path):
    """The hostile tester's cancel during a pass over a big eval file went unheeded until the portal killed the
    trainer 600 s later: it is now heard between eval batches, and the run ends cancelled at the step before."""
    out, cancel = tmp_path / "out", tmp_path / "cancel-run"
    eval_file = write_rows(tmp_path / "eval.jsonl", [QA] * 4000)  # a pass of 1,000 batches: seconds, not steps
    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=100, eval_steps=1, logging_steps=50, save_steps=1000)
    spec["eval_dataset_path"] = str(eval_file)
    spec["cancel_file"] = str(cancel)

    def cancel_once_step_one_is_reported(event, proc):
        if event["event"] == "progress" and event["step"] == 1:  # reported before the step's eval pass begins
            cancel.touch()

    run = run_child(spec, tmp_path / "spec.json", on_event=cancel_once_step_one_is_reported)
    assert run.returncode == EXIT_CANCELLED, run.log[-3000:]
    assert run.one("cancelled")["step"] == 1
    assert not run.of("evaluation"), "the pass at step 1 was stopped, not finished"
    assert not run.of("finished") and not (out / "mtm_manifest.json").exists()
