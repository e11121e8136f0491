"""The inference test can fail: a sample that is empty, only special tokens, one token or character over and over,
or undecodable text fails and says which and why; a merely repetitive one passes with a warning. The verdict is
checked on its own, then on a real model's output through the loading child."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from projects.runs.columns import ValidationCheck, ValidationReport
from projects.runs.validation.checks import CHILD_MODULE
from projects.runs.validation.child import RESULT_PREFIX
from projects.runs.validation.quality import judge_sample

REPO = Path(__file__).resolve().parent.parent

SPECIAL = {0, 1, 2}  # e.g. <unk>, <s>, </s>


@pytest.mark.parametrize(
    ("ids", "text", "expected"),
    [
        ([], "", "Empty output: the model generated no new token"),
        ([2, 2, 0], "", "Only special tokens: all 3 generated tokens are special"),
        ([7, 8], "  \n ", "Empty output: the 2 generated tokens decode to whitespace only."),
        ([9, 9, 9, 9, 9], "hihihihihi", "One token repeated: 'hi' 5 times and nothing else."),
        ([5, 6, 5, 6, 5], "..........", "One character repeated: '.' 10 times and nothing else."),
    ],
)
def test_a_degenerate_sample_fails_saying_which_and_why(ids, text, expected):
    verdict = judge_sample(ids, text, SPECIAL, decode_one=lambda token: "hi")
    assert not verdict.passed
    assert verdict.detail.startswith(expected), verdict.detail


def test_an_ordinary_answer_passes_without_a_warning():
    verdict = judge_sample([40, 41, 42, 2], " Hello world!", SPECIAL)
    assert verdict.passed and verdict.warning == "" and verdict.detail == "Generated 4 tokens greedily."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\ufffd\ufffdab\ufffd", "Undecodable text: 3 of 5 characters are not valid text"),
        ("\x00\x01\x02ok", "Undecodable text: 3 of 5 characters"),
    ],
)
def test_undecodable_text_passes_with_a_warning_that_says_so(text, expected):
    verdict = judge_sample([11, 12, 13], text, SPECIAL)
    assert verdict.passed and verdict.warning.startswith(expected), verdict.warning


def test_a_repetitive_or_partly_undecodable_answer_passes_with_a_warning():
    ids = [40, 41] + [50] * 14
    verdict = judge_sample(ids, "Hello the the the the the the the the the the", SPECIAL, decode_one=lambda t: " the")
    assert verdict.passed
    assert verdict.warning == "Very repetitive: 3 distinct tokens in 16, ' the' 14 times."
    verdict = judge_sample([40, 41, 42, 43], "Hello wor\ufffdld there", SPECIAL)
    assert verdict.passed and verdict.warning == "1 character(s) of the output are not valid text."


def test_a_warning_is_kept_in_the_stored_report():
    stored = ValidationReport(
        passed=True, checks=[ValidationCheck(name="inference", passed=True, detail="ok", warning="Very repetitive")]
    ).model_dump()
    assert ValidationReport.read(stored).checks[0].warning == "Very repetitive"


@pytest.mark.slow
def test_the_loading_child_warns_of_an_untrained_models_garbled_output(tiny_llama_dir):
    """The tiny Llama's random weights answer with bytes that do not decode: the real child says so."""
    from projects.runs.validation.inference_child import run

    result = run(
        {
            "model_dir": str(tiny_llama_dir),
            "adapter_dir": None,
            "base_model_path": None,
            "tokenizer_dir": str(tiny_llama_dir),
            "prompt": "Say hello:",
            "max_new_tokens": 32,
            "trust_remote_code": False,
        }
    )
    assert result["load"]["passed"] is True
    inference = result["inference"]
    assert inference["passed"] is True and inference["text"]
    assert inference["warning"].startswith("Undecodable text: "), inference["warning"]


def test_the_sample_in_a_warning_is_shown_as_generated():
    verdict = judge_sample([11, 12, 13], "\ufffd\ufffdAB\ufffd", SPECIAL)
    assert "'\ufffd\ufffdAB\ufffd'" in verdict.warning


def _child(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", CHILD_MODULE, *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def _result(proc: subprocess.CompletedProcess) -> dict:
    [line] = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(line[len(RESULT_PREFIX) :])


def test_the_check_child_runs_the_named_check_and_reports_a_failure_as_its_result(tmp_path):
    """One entry for every check: each gets its own result line, and a check that fails outright says so in it."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tokenizer_dir": str(tmp_path / "gone"), "model_dir": str(tmp_path / "gone")}))
    inference = _child("inference", str(spec))
    assert inference.returncode == 0
    loaded = _result(inference)["load"]
    assert loaded["passed"] is False and loaded["detail"].startswith("Loading failed:")
    preference = _child("preference", str(spec))
    assert preference.returncode == 0
    assert _result(preference) == {"error": "The preference check failed: KeyError: 'pairs'"}
    assert "KeyError" in preference.stderr
    unreadable = _result(_child("preference", str(tmp_path / "missing.json")))
    assert unreadable["error"].startswith("The preference check failed: FileNotFoundError")


def test_the_check_child_names_its_checks_when_called_wrong():
    for args in ((), ("inference",), ("training", "spec.json")):
        proc = _child(*args)
        assert proc.returncode == 2 and "usage" in proc.stderr and "inference,preference" in proc.stderr
