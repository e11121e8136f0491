"""The dataset layer on real files and the real tiny Llama tokenizer: reading, shapes, masks, paths, uploads."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projects.datasets import (
    IGNORE_INDEX,
    DatasetError,
    build_examples,
    check_dataset_path,
    detect_format,
    inspect_dataset,
    load_dataset,
    load_rows,
    prompt_text,
    store_upload,
)
from tests.unprivileged import call_unprivileged

ROWS = {
    "text": [{"text": "The quick brown fox jumps over the lazy dog."}, {"text": "Hello world!"}],
    "prompt_completion": [
        {"prompt": "Question: what is two plus two?", "completion": " Answer: four."},
        {"prompt": "Hello", "completion": " world!"},
    ],
    "alpaca": [
        {"instruction": "Add two and two.", "input": "", "output": "four"},
        {"instruction": "Repeat the text.", "input": "the lazy dog", "output": "the lazy dog"},
    ],
    "messages": [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "what is two plus two?"},
                {"role": "assistant", "content": "four"},
                {"role": "user", "content": "and three plus three?"},
                {"role": "assistant", "content": "six"},
            ]
        }
    ],
}


def codes(problems) -> list[str]:
    return [p.code for p in problems]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def load_error(path: Path, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        load_rows(path, **kwargs)
    return caught.value


def learnt(tokenizer, example: dict) -> str:
    return tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE_INDEX]
    )


def not_learnt(tokenizer, example: dict) -> str:
    return tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label == IGNORE_INDEX]
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def plain_tokenizer(tmp_path_factory):
    """The same tiny Llama without a chat template."""
    from transformers import AutoTokenizer

    from models_registry.demo import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("plain-llama") / "model", chat_template=False)
    return AutoTokenizer.from_pretrained(folder)


# --- reading and shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(ROWS))
def test_each_format_is_detected(tmp_path, fmt):
    loaded = load_dataset(write_jsonl(tmp_path / "data.jsonl", ROWS[fmt]))
    assert loaded.format == fmt
    assert loaded.kind == "jsonl"
    assert loaded.rows == ROWS[fmt]
    assert detect_format(loaded.rows) == fmt


@pytest.mark.parametrize("fmt", ["text", "prompt_completion", "alpaca"])
def test_jsonl_json_array_and_csv_read_the_same_rows(tmp_path, fmt):
    rows = ROWS[fmt]
    jsonl = load_rows(write_jsonl(tmp_path / "d.jsonl", rows))
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2))
    array = load_rows(tmp_path / "d.json")
    table = load_rows(write_csv(tmp_path / "d.csv", rows))
    assert jsonl == array == table == rows


def test_content_decides_when_the_extension_lies(tmp_path):
    rows = ROWS["prompt_completion"]
    cases = {
        "jsonl-named.json": "".join(json.dumps(r) + "\n" for r in rows),
        "array-named.jsonl": json.dumps(rows),
        "array-named.csv": json.dumps(rows),
        "csv-named.jsonl": "prompt,completion\nHello, world!\nQuestion: what is two plus two?, Answer: four.\n",
    }
    kinds = {}
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        loaded = load_dataset(tmp_path / name)
        kinds[name] = loaded.kind
        assert loaded.format == "prompt_completion"
        assert codes(loaded.warnings) == ["dataset_extension_mismatch"]
    assert kinds == {
        "jsonl-named.json": "jsonl",
        "array-named.jsonl": "json",
        "array-named.csv": "json",
        "csv-named.jsonl": "csv",
    }


def test_utf8_bom_and_blank_lines_are_tolerated(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"text": "caf\xc3\xa9"}\n\n  \n{"text": "b"}\r\n')
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext\r\ncaf\xc3\xa9\r\n\r\nb\r\n")
    assert load_rows(tmp_path / "bom.jsonl") == load_rows(tmp_path / "bom.csv") == [{"text": "café"}, {"text": "b"}]


def test_extra_keys_are_ignored_with_a_warning(tmp_path):
    rows = [{"id": 1, "prompt": "a", "completion": "b", "source": "x"}]
    loaded = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert loaded.format == "prompt_completion"
    [warning] = loaded.warnings
    assert warning.code == "dataset_ignored_keys"
    assert "'id', 'source'" in warning.message


def test_bad_jsonl_row_named_by_row_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in ROWS["prompt_completion"] * 3]
    lines[3] = '{"prompt": "x", "completion": 7}'
    lines.insert(1, "")  # a blank line: row numbers and line numbers part
    path.write_text("\n".join(lines))
    [problem] = load_error(path).problems
    assert problem.code == "dataset_bad_row"
    assert problem.message == "Row 4 (line 5): 'completion' must be a string, got number."
    assert "row 4" in problem.hint


def test_bad_json_array_row_named(tmp_path):
    rows = ROWS["prompt_completion"] * 4
    rows[6] = {"prompt": "x", "completion": None}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows, indent=1))
    [problem] = load_error(path).problems
    assert problem.message.startswith("Row 7 (line ")
    assert problem.message.endswith("'completion' must be a string, got null.")


def test_bad_csv_row_named(tmp_path):
    rows = ROWS["prompt_completion"] * 3
    rows[4] = {"prompt": "x", "completion": "   "}
    [problem] = load_error(write_csv(tmp_path / "d.csv", rows)).problems
    assert problem.message == "Row 5 (line 6): 'completion' is empty."


def test_invalid_json_on_a_line_is_named_and_reading_goes_on(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",}\n{"text": "c"}\n[1, 2]\n')
    first, second = load_error(path).problems
    assert first.code == "dataset_bad_json"
    assert first.message.startswith("Row 2 (line 2): invalid JSON:")
    assert second.message == "Row 4 (line 4): expected an object ({...}), got array."


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[{"text": "a"},\n {"text": "b"},\n]', "Row 3 (line 3): invalid JSON"),
        ('[{"text": "a"}\n {"text": "b"}]', "Row 1 (line 1): expected ',' or ']' after this row, found '{' at line 2"),
        ('[{"text": "a"}', "Row 1 (line 1): expected ',' or ']' after this row, found the end of the file"),
        ('[{"text": "a"}] x', "Unexpected text after the closing ']' at line 1"),
    ],
)
def test_broken_json_array_is_named(tmp_path, body, expected):
    (tmp_path / "d.json").write_text(body)
    [problem] = load_error(tmp_path / "d.json").problems
    assert problem.code == "dataset_bad_json"
    assert problem.message.startswith(expected)


def test_csv_row_with_wrong_number_of_values_and_bad_header(tmp_path):
    (tmp_path / "d.csv").write_text("prompt,completion\na,b\na,b,c\n")
    [problem] = load_error(tmp_path / "d.csv").problems
    assert problem.message == "Row 2 (line 3): has 3 values but the header has 2 columns."
    (tmp_path / "h.csv").write_text("prompt,prompt\na,b\n")
    [problem] = load_error(tmp_path / "h.csv").problems
    assert problem.code == "dataset_bad_header"
    assert "'prompt' twice" in problem.message


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hi", "'messages' must be an array of {role, content} objects, got string"),
        ([{"role": "bot", "content": "x"}], "messages[0].role must be one of system, user, assistant, tool, got 'bot'"),
        ([{"role": "user", "content": 3}], "messages[0].content must be a string, got number"),
        ([{"role": "user", "content": "hi"}], "'messages' has no assistant message with content"),
    ],
)
def test_bad_messages_are_named(tmp_path, messages, expected):
    rows = [*ROWS["messages"], {"messages": messages}]
    [problem] = load_error(write_jsonl(tmp_path / "d.jsonl", rows)).problems
    assert problem.message.startswith(f"Row 2 (line 2): {expected}")


def test_error_collection_stops_with_and_more(tmp_path):
    rows = [{"prompt": "p", "completion": i} for i in range(50)]
    problems = load_error(write_jsonl(tmp_path / "d.jsonl", rows), max_errors=5).problems
    assert len(problems) == 6
    assert [p.message.split(":")[0] for p in problems[:5]] == [f"Row {n} (line {n})" for n in range(1, 6)]
    assert problems[-1].code == "dataset_too_many_errors"
    assert "and more" in problems[-1].message


def test_mixed_formats_name_the_first_row_that_differs(tmp_path):
    rows = [*ROWS["prompt_completion"], ROWS["text"][0], *ROWS["prompt_completion"], *ROWS["text"]]
    [problem] = load_error(write_jsonl(tmp_path / "d.jsonl", rows)).problems
    assert problem.code == "dataset_mixed_formats"
    assert problem.message.startswith("Row 3 (line 3) is a 'text' row but row 1 (line 1) is a 'prompt_completion' row")
    assert "(2 more rows differ too)" in problem.message


def test_unknown_keys_list_the_supported_shapes(tmp_path):
    [problem] = load_error(write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])).problems
    assert problem.code == "dataset_unknown_format"
    assert "'question', 'answer'" in problem.message
    for key in ('"text"', '"prompt"', '"messages"', '"instruction"'):
        assert key in problem.hint
    with pytest.raises(DatasetError) as caught:
        detect_format([{"text": "a"}, {"question": "q"}])
    assert caught.value.problems[0].message.startswith("Row 2 has 'question'")


@pytest.mark.parametrize(
    ("name", "body"),
    [("a.jsonl", b""), ("b.jsonl", b" \n\n"), ("c.json", b"[ ]"), ("d.csv", b"text\n"), ("e.csv", b"\xef\xbb\xbf")],
)
def test_empty_files_are_refused(tmp_path, name, body):
    (tmp_path / name).write_bytes(body)
    assert codes(load_error(tmp_path / name).problems) == ["dataset_empty"]


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.json"])
def test_non_utf8_is_refused_naming_the_line(tmp_path, name):
    body = {
        "d.jsonl": b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9"}\n',
        "d.csv": b"text\na\ncaf\xe9\n",
        "d.json": b'[{"text": "a"},\n{"text": "b"},\n{"text": "caf\xe9"}]',
    }[name]
    (tmp_path / name).write_bytes(body)
    [problem] = load_error(tmp_path / name).problems
    assert problem.code == "dataset_encoding"
    assert problem.message == "Line 3 is not valid UTF-8 (byte 0xe9)."
    assert "UTF-8" in problem.hint


def test_utf16_and_binary_files_are_refused(tmp_path):
    (tmp_path / "u.csv").write_bytes("text\nhello\n".encode("utf-16"))
    (tmp_path / "p.json").write_bytes(b"PAR1\x00\x00binary")
    assert "UTF-16" in load_error(tmp_path / "u.csv").problems[0].message
    assert "Parquet" in load_error(tmp_path / "p.json").problems[0].message


def test_size_limit(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS["text"] * 10)
    [problem] = load_error(path, max_bytes=100).problems
    assert problem.code == "dataset_too_large"
    assert "the limit is 100 bytes" in problem.message


# --- rendering to examples ------------------------------------------------------------------------


def test_text_learns_everything(tokenizer):
    [example] = build_examples(ROWS["text"][:1], "text", tokenizer, 512)
    assert example["labels"] == example["input_ids"]
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example["input_ids"]) == ROWS["text"][0]["text"] + "</s>"


def test_prompt_completion_masks_exactly_the_prompt(tokenizer):
    examples = build_examples(ROWS["prompt_completion"], "prompt_completion", tokenizer, 512)
    assert len(examples) == 2
    for row, example in zip(ROWS["prompt_completion"], examples, strict=True):
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        assert example["input_ids"][: len(prompt_ids)] == prompt_ids
        assert example["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
        assert learnt(tokenizer, example) == row["completion"] + "</s>"
        assert not_learnt(tokenizer, example) == row["prompt"]


def test_alpaca_learns_the_output_after_a_fixed_prompt(tokenizer):
    plain, with_input = build_examples(ROWS["alpaca"], "alpaca", tokenizer, 512)
    assert not_learnt(tokenizer, plain) == "### Instruction:\nAdd two and two.\n\n### Response:\n"
    assert learnt(tokenizer, plain) == "four</s>"
    assert not_learnt(tokenizer, with_input) == (
        "### Instruction:\nRepeat the text.\n\n### Input:\nthe lazy dog\n\n### Response:\n"
    )
    assert learnt(tokenizer, with_input) == "the lazy dog</s>"


def test_messages_learn_only_the_assistant_turns(tokenizer):
    [example] = build_examples(ROWS["messages"], "messages", tokenizer, 512)
    assert learnt(tokenizer, example) == "four<|end|>\nsix<|end|>\n</s>"
    assert not_learnt(tokenizer, example) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nwhat is two plus two?<|end|>\n<|assistant|>\n"
        "<|user|>\nand three plus three?<|end|>\n<|assistant|>\n"
    )
    # what is not learnt is exactly what the model is given at inference time
    assert prompt_text(ROWS["messages"][0], "messages", tokenizer).endswith("two plus two?<|end|>\n<|assistant|>\n")


def test_messages_without_chat_template_are_refused(tmp_path, plain_tokenizer):
    with pytest.raises(DatasetError) as caught:
        build_examples(ROWS["messages"], "messages", plain_tokenizer, 512)
    [problem] = caught.value.problems
    assert problem.code == "no_chat_template"
    assert "chat_template" in problem.hint
    report = inspect_dataset(write_jsonl(tmp_path / "chat.jsonl", ROWS["messages"]), plain_tokenizer, 512)
    assert not report.valid
    assert codes(report.errors) == ["no_chat_template"]
    assert report.format == "messages"  # the file itself is fine; the model cannot render it
    assert build_examples(ROWS["prompt_completion"], "prompt_completion", plain_tokenizer, 512)


def test_template_that_rewrites_earlier_turns_uses_generation_markers(tokenizer):
    # The count of messages comes first, so a conversation's beginning changes as turns are added.
    body = (
        "{{ messages|length }}\n{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|end|>' }}{% endgeneration %}"
        "{% else %}{{ m['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    )
    marked = copy.deepcopy(tokenizer)
    marked.chat_template = body
    [example] = build_examples(ROWS["messages"], "messages", marked, 512)
    assert learnt(marked, example) == "four<|end|>six<|end|></s>"
    unmarked = copy.deepcopy(tokenizer)
    unmarked.chat_template = body.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(DatasetError) as caught:
        build_examples(ROWS["messages"], "messages", unmarked, 512)
    assert caught.value.problems[0].code == "chat_template_error"
    assert caught.value.problems[0].message.startswith("Row 1: ")


def test_chat_template_refusal_names_the_row(tokenizer):
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('tool turns are not supported') }}"
        "{% endif %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    )
    tool_row = {"messages": [*ROWS["messages"][0]["messages"], {"role": "tool", "content": "42"}]}
    with pytest.raises(DatasetError) as caught:
        build_examples([ROWS["messages"][0], tool_row], "messages", strict, 512)
    [problem] = caught.value.problems
    assert problem.code == "chat_template_error"
    assert problem.message.startswith("Row 2: ")
    assert "tool turns are not supported" in problem.message


def test_a_format_chosen_by_the_caller_is_checked_row_by_row(tokenizer):
    alpaca_with_text = [{**row, "text": "the whole record"} for row in ROWS["alpaca"]]
    assert detect_format(alpaca_with_text) == "alpaca"
    forced = build_examples(alpaca_with_text, "text", tokenizer, 64)
    assert learnt(tokenizer, forced[0]) == "the whole record</s>"
    with pytest.raises(DatasetError) as caught:
        build_examples([{"text": "a"}, {"prompt": "x", "completion": "y"}], "text", tokenizer, 64)
    [problem] = caught.value.problems
    assert problem.message == "Row 2: missing 'text'."


def test_truncation_and_drops_are_counted(tokenizer):
    rows = [
        {"prompt": "Hello", "completion": " world"},
        {"prompt": "The quick brown fox jumps over the lazy dog.", "completion": " Yes."},
        {"prompt": "Hi", "completion": " 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"},
    ]
    lengths = [len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows]
    limit = lengths[0]
    examples = build_examples(rows, "prompt_completion", tokenizer, limit)
    # row 2's prompt alone fills the limit: nothing left to learn, so it is dropped
    assert limit <= len(tokenizer(rows[1]["prompt"])["input_ids"])
    assert (examples.truncated, examples.dropped, len(examples)) == (2, 1, 2)
    assert all(len(e["input_ids"]) <= limit for e in examples)
    assert examples.summary()["examples"] == 2


def test_token_stats_count_truncations(tmp_path, tokenizer):
    rows = [{"text": " ".join(str(n) for n in range(k))} for k in (1, 3, 5, 8, 13, 21)]
    lengths = sorted(len(tokenizer(r["text"])["input_ids"]) + 1 for r in rows)
    limit = lengths[3]
    report = inspect_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, limit)
    stats = report.token_stats
    assert (stats.min, stats.max, stats.total) == (lengths[0], lengths[-1], sum(lengths))
    assert stats.over_max == sum(1 for n in lengths if n > limit) == 2
    assert stats.dropped == 0
    assert stats.max_seq_length == limit
    assert build_examples(rows, "text", tokenizer, limit).truncated == 2
    assert "dataset_truncation" in codes(report.warnings)
    assert "2 of 6 rows" in report.warnings[-1].message


def test_inspect_reports_preview_hash_and_problems(tmp_path, tokenizer):
    rows = [{"prompt": "x" * 1000, "completion": "short"}] + ROWS["prompt_completion"] * 5
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    report = inspect_dataset(path, preview_rows=3)
    assert report.valid
    assert (report.format, report.kind, report.rows) == ("prompt_completion", "jsonl", 11)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.token_stats is None
    assert len(report.preview) == 3
    assert report.preview[0]["prompt"].startswith("x" * 300 + "…")
    assert "700 more characters" in report.preview[0]["prompt"]
    assert report.preview[1] == rows[1]
    assert json.loads(json.dumps(report.model_dump(mode="json")))["format"] == "prompt_completion"

    (tmp_path / "bad.json").write_text(json.dumps([{"text": "a"}, {"text": 5}]))
    bad = inspect_dataset(tmp_path / "bad.json", tokenizer, 64)
    assert not bad.valid
    assert bad.errors[0].message == "Row 2 (line 1): 'text' must be a string, got number."
    assert bad.model_dump(mode="json")["errors"][0]["code"] == "dataset_bad_row"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40)).filter(
            lambda pc: pc[0].strip() and pc[1].strip()
        ),
        min_size=1,
        max_size=8,
    )
)
def test_property_only_completion_tokens_are_learnt(tokenizer, pairs):
    rows = [{"prompt": p, "completion": c} for p, c in pairs]
    assert detect_format(rows) == "prompt_completion"
    examples = build_examples(rows, "prompt_completion", tokenizer, None)
    assert len(examples) == len(rows)
    eos = tokenizer.eos_token_id
    for row, example in zip(rows, examples, strict=True):
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        completion_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        expected = completion_ids + ([eos] if completion_ids[-1:] != [eos] else [])
        assert example["input_ids"] == prompt_ids + expected
        assert [label for label in example["labels"] if label != IGNORE_INDEX] == expected
        assert example["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)


def test_prompt_text_for_each_format(tokenizer):
    assert prompt_text(ROWS["prompt_completion"][0], "prompt_completion") == "Question: what is two plus two?"
    assert prompt_text(ROWS["alpaca"][0], "alpaca").endswith("### Response:\n")
    assert prompt_text(ROWS["text"][0], "text") is None


# --- paths ----------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path):
    allowed = tmp_path / "datasets"
    outside = tmp_path / "private"
    uploads = tmp_path / "media" / "datasets"
    for folder in (allowed, outside, uploads):
        folder.mkdir(parents=True)
    write_jsonl(allowed / "good.jsonl", ROWS["text"])
    write_jsonl(outside / "secret.jsonl", ROWS["text"])
    return allowed, outside, uploads


def check(path, allowed, uploads):
    return check_dataset_path(str(path), [str(allowed)], upload_root=uploads)


def test_path_inside_a_root_is_accepted(roots):
    allowed, _, uploads = roots
    result = check(allowed / "good.jsonl", allowed, uploads)
    assert result.valid, result.errors
    assert result.path == os.path.realpath(allowed / "good.jsonl")
    assert result.size_bytes == (allowed / "good.jsonl").stat().st_size
    assert result.model_dump(mode="json")["valid"] is True


def test_path_escaping_with_dotdot_is_refused(roots):
    allowed, _, uploads = roots
    result = check(f"{allowed}/../private/secret.jsonl", allowed, uploads)
    [problem] = result.errors
    assert problem.code == "outside_allowed_roots"
    assert "resolves to" in problem.message
    assert str(allowed) in problem.message


def test_symlink_out_of_a_root_is_refused_and_one_within_is_accepted(roots):
    allowed, outside, uploads = roots
    (allowed / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (allowed / "dir-link").symlink_to(outside)
    (allowed / "inner.jsonl").symlink_to(allowed / "good.jsonl")
    assert codes(check(allowed / "link.jsonl", allowed, uploads).errors) == ["outside_allowed_roots"]
    assert codes(check(allowed / "dir-link" / "secret.jsonl", allowed, uploads).errors) == ["outside_allowed_roots"]
    assert check(allowed / "inner.jsonl", allowed, uploads).valid


def test_sibling_with_the_roots_name_as_prefix_is_refused(roots, tmp_path):
    allowed, _, uploads = roots
    sibling = tmp_path / "datasets-evil"
    sibling.mkdir()
    write_jsonl(sibling / "x.jsonl", ROWS["text"])
    assert codes(check(sibling / "x.jsonl", allowed, uploads).errors) == ["outside_allowed_roots"]


def test_outside_is_reported_before_existence(roots):
    allowed, outside, uploads = roots
    assert codes(check(outside / "nope.jsonl", allowed, uploads).errors) == ["outside_allowed_roots"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [("", "dataset_required"), ("data/x.jsonl", "not_absolute"), ("/x\x00.jsonl", "invalid_path")],
)
def test_malformed_paths(roots, raw, code):
    allowed, _, uploads = roots
    assert codes(check(raw, allowed, uploads).errors) == [code]


def test_missing_directory_and_empty_files(roots):
    allowed, _, uploads = roots
    (allowed / "empty.jsonl").write_bytes(b"")
    assert codes(check(allowed / "missing.jsonl", allowed, uploads).errors) == ["dataset_not_found"]
    assert codes(check(allowed, allowed, uploads).errors) == ["not_a_file"]
    assert codes(check(allowed / "empty.jsonl", allowed, uploads).errors) == ["dataset_empty"]


def test_unreadable_file():
    """As root, checked by a child that drops to nobody (root reads every file); a readable sibling proves the
    child can read where it may, so the refusal is the file's own permission."""
    base = Path(tempfile.mkdtemp(prefix="mtm-unreadable-", dir="/tmp"))  # /tmp, not tmp_path: nobody must traverse
    try:
        base.chmod(0o755)
        allowed = base / "datasets"
        allowed.mkdir()
        write_jsonl(allowed / "good.jsonl", ROWS["text"])
        write_jsonl(allowed / "open.jsonl", ROWS["text"])
        allowed.chmod(0o755)
        (allowed / "good.jsonl").chmod(0)
        (allowed / "open.jsonl").chmod(0o644)
        target = "projects.datasets:check_dataset_path"
        locked = call_unprivileged(target, str(allowed / "good.jsonl"), [str(allowed)], upload_root=str(base / "up"))
        readable = call_unprivileged(target, str(allowed / "open.jsonl"), [str(allowed)], upload_root=str(base / "up"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert [p["code"] for p in locked["errors"]] == ["dataset_unreadable"]
    assert readable["valid"] is True


# --- uploads --------------------------------------------------------------------------------------


def test_upload_is_stored_under_media_root_and_always_allowed(tmp_path, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MEDIA_ROOT = tmp_path / "media"
    body = "".join(json.dumps(r) + "\n" for r in ROWS["prompt_completion"]).encode()
    stored = store_upload(SimpleUploadedFile("my data (1).JSONL", body), "my data (1).JSONL")
    assert stored.name == "my_data_1.jsonl"
    assert stored.parent.parent == tmp_path / "media" / "datasets"
    assert stored.read_bytes() == body
    result = check_dataset_path(str(stored), [])  # no dataset roots configured at all
    assert result.valid, result.errors
    assert result.uploaded
    assert inspect_dataset(stored).format == "prompt_completion"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("data.txt", "upload_bad_extension"),
        ("data.jsonl.exe", "upload_bad_extension"),
        ("data", "upload_bad_extension"),
        ("../../etc/cron.d/x.jsonl", "upload_bad_name"),
        ("/etc/passwd.csv", "upload_bad_name"),
        ("..\\..\\evil.json", "upload_bad_name"),
        (".hidden.jsonl", "upload_bad_name"),
        ("..", "upload_bad_name"),
        ("a\x00.jsonl", "upload_bad_name"),
        ("line\nbreak.csv", "upload_bad_name"),
        ("", "upload_bad_name"),
    ],
)
def test_upload_refuses_bad_names_and_leaves_nothing(tmp_path, name, code):
    root = tmp_path / "uploads"
    source = write_jsonl(tmp_path / "d.jsonl", ROWS["text"])
    with open(source, "rb") as fh, pytest.raises(DatasetError) as caught:
        store_upload(fh, name, upload_root=root)
    assert caught.value.codes == [code]
    assert not root.exists()  # refused before anything is created
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d.jsonl"]


def test_upload_too_large_or_empty_leaves_nothing(tmp_path):
    root = tmp_path / "uploads"
    source = write_jsonl(tmp_path / "d.jsonl", ROWS["text"] * 100)
    with open(source, "rb") as fh, pytest.raises(DatasetError) as caught:
        store_upload(fh, "d.jsonl", upload_root=root, max_bytes=1000)
    assert caught.value.codes == ["dataset_too_large"]
    (tmp_path / "empty.csv").write_bytes(b"")
    with open(tmp_path / "empty.csv", "rb") as fh, pytest.raises(DatasetError) as caught:
        store_upload(fh, "empty.csv", upload_root=root)
    assert caught.value.codes == ["dataset_empty"]
    assert list(root.iterdir()) == []


def test_token_stats_of_a_huge_row_are_quick_and_still_count_it_as_truncated(tmp_path, tiny_llama_dir, settings):
    from transformers import AutoTokenizer

    settings.MTM_DATASET_MAX_ROW_BYTES = 4 * 1024**2  # a row this long is otherwise refused before it is tokenized
    path = tmp_path / "huge.jsonl"
    path.write_text(
        json.dumps({"prompt": "a", "completion": "word " * 400_000})
        + "\n"
        + json.dumps({"prompt": "b", "completion": "c"})
        + "\n"
    )
    report = inspect_dataset(path, AutoTokenizer.from_pretrained(tiny_llama_dir), 64)
    assert report.valid and report.token_stats.over_max == 1
    assert report.token_stats.max > 64


def test_unknown_keys_message_names_at_most_ten(tmp_path):
    path = tmp_path / "wide.jsonl"
    path.write_text(json.dumps({f"c{i}": "v" for i in range(500)}) + "\n")
    report = inspect_dataset(path)
    [problem] = report.errors
    assert "'c0'" in problem.message and "and 490 more" in problem.message and "'c499'" not in problem.message


class _Recording:
    """The real tokenizer, with the longest text it was handed written down."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, texts, **kwargs):
        self.longest = max([self.longest, *(len(t) for t in ([texts] if isinstance(texts, str) else texts))])
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_the_trainer_never_tokenizes_a_long_row_whole(tokenizer):
    """The hostile pass: rows just under the row-size limit, a thousand at a time, cost the trainer's tokenizer
    gigabytes. Each string is cut to max_seq_length × 64 characters first; the examples are the same."""
    rows = [{"prompt": "a", "completion": "word " * 200_000}, {"prompt": "b", "completion": "c d e"}]
    recording = _Recording(tokenizer)
    cut = build_examples(rows, "prompt_completion", recording, 64)
    assert recording.longest <= 64 * 64
    whole = build_examples(rows, "prompt_completion", tokenizer, None)
    assert [e["input_ids"] for e in cut] == [e["input_ids"][:64] for e in whole]
    assert cut.truncated == 1
