"""Every bad row of a dataset is named (up to the limit), each with a "did you mean" when its keys are a near miss
of a supported shape."""

from __future__ import annotations

import json

import pytest

from projects.datasets import inspect_dataset
from projects.datasets.formats import REQUIRED_KEYS
from projects.datasets.key_suggestions import suggest_keys


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["prompt", "answer"], [("answer", "completion")]),
        (["question", "answer"], [("question", "prompt"), ("answer", "completion")]),
        (["promt", "completion"], [("promt", "prompt")]),
        (["Prompt", "Completion"], [("Prompt", "prompt"), ("Completion", "completion")]),
        (["conversations"], [("conversations", "messages")]),
        (["instruction", "outptu"], [("outptu", "output")]),
        (["colour", "shape"], []),
    ],
)
def test_a_near_miss_key_gets_the_key_it_stands_for(keys, expected):
    assert suggest_keys(keys, REQUIRED_KEYS) == expected


def test_every_bad_row_is_listed_with_its_suggestion(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}] + [{"prompt": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = inspect_dataset(str(path), None, 64)
    messages = [problem.message for problem in report.errors]
    assert [message.split(" has ")[0] for message in messages] == ["Row 2 (line 2)", "Row 3 (line 3)", "Row 4 (line 4)"]
    assert all(message.endswith("Did you mean 'completion' instead of 'answer'?") for message in messages)
