"""A run whose validation failed says what to do for the check that failed."""

from __future__ import annotations

from projects.runs.columns import ValidationCheck
from projects.runs.stages import validation_failed


def test_an_empty_answer_points_at_the_prompt_and_the_training_not_at_the_disk():
    problem = validation_failed(ValidationCheck(name="inference", passed=False, detail="only special tokens"))
    assert problem.code == "validation_failed"
    assert problem.message == "Post-training validation failed: the inference check did not pass: only special tokens"
    assert "validation prompt" in problem.hint and "train longer" in problem.hint
    assert "disk space" not in problem.hint and problem.hint.endswith("and start a new run.")


def test_a_preference_failure_points_at_the_training_and_the_pairs():
    problem = validation_failed(ValidationCheck(name="preference", passed=False, detail="prefers 1 of 4"))
    assert "chosen and rejected" in problem.hint and "disk space" not in problem.hint


def test_a_file_or_load_failure_points_at_what_was_saved():
    for name in ("files", "json", "load"):
        problem = validation_failed(ValidationCheck(name=name, passed=False, detail="x"))
        assert "disk space or an interrupted save" in problem.hint, name
