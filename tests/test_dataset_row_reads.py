"""Reading a dataset without holding all of its rows: the rows counted past a request's read come out as the reader
counts them (blank lines, line ends, quoted line breaks, rows across read chunks); the validation stage's few rows
of a run's snapshot (first row, held-out rows, the eval rows compared) are the rows it took from the whole list
before; and the worker's full read, which tokenizes a batch of rows at a time and keeps one length a row, gives the
token figures and names the rows the chat template refuses as one pass over every row did.

Real files, the tiny Llama's real tokenizer, real run rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mtm.audit import Actor
from projects.datasets import encode_rows, load_rows
from projects.datasets.errors import CHAT_TEMPLATE_ERROR
from projects.datasets.eval_split import split_rows
from projects.datasets.examples import cut_to_length
from projects.datasets.loading import load_dataset, open_dataset
from projects.datasets.pairs import encode_pairs
from projects.datasets.report import inspect_dataset
from projects.datasets.row_count import rows_past
from projects.datasets.streaming import first_rows, last_rows, row_count, rows_at
from projects.datasets.token_tally import BATCH_ROWS
from projects.models import TrainingRun
from projects.runs import stages
from projects.runs.dataset_snapshot import EVAL_SNAPSHOT_DIR, SNAPSHOT_DIR
from projects.services import create_project
from tests.pipeline_helpers import start
from tests.test_owned_paths import fields

LONG = "x" * 300_000  # longer than a read chunk (256 KiB): a row or a field across chunks


def qa(n: int, words: int = 1) -> dict:
    return {"prompt": f"Question {n}: " + "word " * words, "completion": f" Answer {n}."}


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def jsonl(rows: list[dict], end: str = "\n") -> str:
    return "".join(json.dumps(row) + end for row in rows)


# --- counting past a request's read ------------------------------------------------------------------------------

ODD_FILES = {
    "jsonl, blank and space-only lines": ("jsonl", "\n  \n".join(json.dumps(qa(n)) for n in range(9)) + "\n\n\t\n"),
    "jsonl, CRLF, BOM, no last line break": ("jsonl", "\ufeff" + jsonl([qa(n) for n in range(7)], "\r\n").rstrip()),
    "jsonl, rows across chunks": ("jsonl", jsonl([qa(0), {"prompt": LONG, "completion": "y"}, qa(2), qa(3)])),
    "csv, CRLF and empty lines": ("csv", "prompt,completion\r\n" + "".join(f"q{n},a{n}\r\n\r\n" for n in range(8))),
    "csv, CR line ends": ("csv", "prompt,completion\r" + "".join(f"q{n},a{n}\r" for n in range(8))),
    "csv, quoted line breaks": ("csv", "prompt,completion\n" + "".join(f'q{n},"a\n\nb\n{n}"\n' for n in range(6))),
    "csv, a field across chunks": ("csv", f'prompt,completion\nq,"{LONG}\n{LONG[:1000]}"\nq2,a2\nq3,a3\n'),
}


@pytest.mark.parametrize("name", ODD_FILES)
def test_rows_past_a_bound_are_counted_as_the_reader_counts_them(tmp_path, name):
    kind, text = ODD_FILES[name]
    path = write(tmp_path / f"data.{kind}", text)
    rows = load_dataset(path).count
    with open_dataset(path) as file:
        for limit in range(1, rows + 2):
            assert rows_past(file, kind, limit, 1024 * 1024) is (rows > limit), (limit, rows)


def test_rows_of_a_json_array_past_a_request_are_left_to_the_worker(tmp_path):
    path = write(tmp_path / "data.json", json.dumps([qa(n) for n in range(40)]))
    with open_dataset(path) as file:
        assert rows_past(file, "json", 10, 1024 * 1024) is None


# --- the validation stage's few rows ------------------------------------------------------------------------------

KINDS = {
    "jsonl": lambda rows: jsonl(rows),
    "json": lambda rows: json.dumps(rows, indent=1),
    "csv": lambda rows: "prompt,completion\n" + "".join(f'"{r["prompt"]}","{r["completion"]}"\n' for r in rows),
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_few_rows_read_are_those_of_the_whole_list(tmp_path, kind):
    path = write(tmp_path / f"data.{kind}", KINDS[kind]([qa(n) for n in range(50)]))
    every = load_rows(path)
    assert first_rows(path, 1) == every[:1] and first_rows(path, 7) == every[:7] and first_rows(path, 99) == every
    assert last_rows(path, 1) == every[-1:] and last_rows(path, 5) == every[-5:] and last_rows(path, 99) == every
    assert rows_at(path, [31, 0, 7, 49]) == [every[i] for i in (0, 7, 31, 49)]
    assert row_count(path) == len(every)
    assert first_rows(path, 0) == last_rows(path, 0) == rows_at(path, []) == []


@pytest.fixture
def run_on_snapshot(team, tiny_llama_in_cache, settings, tmp_path):
    """A started run whose dataset (1,000 rows) is snapshotted where the train stage puts it, with a 30 % eval
    share; run folders in this test's own var/."""
    settings.VAR_DIR = tmp_path / "var"
    name, _ = tiny_llama_in_cache
    dataset = write(team["root"] / "datasets" / "qa.jsonl", jsonl([qa(n) for n in range(1_000)]))
    hyperparameters = {**fields(team["root"], name)["hyperparameters"], "eval_fraction": 0.3, "seed": 7}
    data = fields(team["root"], name, dataset_path=str(dataset), hyperparameters=hyperparameters)
    project = create_project(actor=Actor.command_line(team["mallory"]), data=data)
    run = start(project, team["mallory"])
    snapshot = write(stages.run_dir(run.pk) / SNAPSHOT_DIR / dataset.name, dataset.read_bytes())

    def configure(**facts) -> TrainingRun:
        config = TrainingRun.objects.get(pk=run.pk).config
        TrainingRun.objects.filter(pk=run.pk).update(config={**config, **facts})
        return TrainingRun.objects.get(pk=run.pk)

    return configure, snapshot


def test_the_validation_stage_takes_the_rows_it_took_from_the_whole_snapshot(run_on_snapshot):
    configure, snapshot = run_on_snapshot
    every = load_rows(snapshot)
    assert stages._snapshot_rows(configure())[:1] == every[:1]  # the first row: the prompt
    assert stages._snapshot_rows(configure(held_out_row=True))[-1:] == every[-1:]  # the row not trained on
    assert stages._snapshot_rows(configure(held_out_pairs=6))[-6:] == every[-6:]  # DPO's held-out pairs
    for held_out in (False, True):
        run = configure(held_out_row=held_out, held_out_pairs=0)
        trained = every[:-1] if held_out else every
        _, eval_rows = split_rows(trained, 0.3, 7)
        assert len(eval_rows) > stages.MAX_BEFORE_AFTER_ROWS
        assert stages._before_after_rows(run)["rows"] == eval_rows[: stages.MAX_BEFORE_AFTER_ROWS]


def test_without_an_eval_share_the_held_out_row_is_compared(run_on_snapshot):
    configure, snapshot = run_on_snapshot
    hyperparameters = {**configure().config["hyperparameters"], "eval_fraction": 0.0, "eval_prompts": 2}
    run = configure(hyperparameters=hyperparameters, held_out_row=True)
    assert stages._before_after_rows(run)["rows"] == load_rows(snapshot)[-1:]
    assert stages._before_after_rows(configure(held_out_row=False)) is None


def test_an_eval_files_first_rows_are_compared(run_on_snapshot, tmp_path):
    configure, _ = run_on_snapshot
    eval_file = write(tmp_path / "eval.jsonl", jsonl([qa(n, words=2) for n in range(300)]))
    hyperparameters = {**configure().config["hyperparameters"], "eval_fraction": 0.0}
    run = configure(eval_dataset_path=str(eval_file), hyperparameters=hyperparameters)
    write(stages.run_dir(run.pk) / EVAL_SNAPSHOT_DIR / "eval.jsonl", eval_file.read_bytes())
    rows = stages._before_after_rows(run)["rows"]
    assert rows == load_rows(eval_file)[: stages.MAX_BEFORE_AFTER_ROWS]


# --- the worker's full read: token figures, a batch at a time ----------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def nearest_rank(ordered: list[int], fraction: float) -> int:
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def figures(lengths: list[int], limit: int | None) -> dict:
    """The token figures of a list of lengths, as one pass over every row computed them."""
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "p50": nearest_rank(ordered, 0.5),
        "p95": nearest_rank(ordered, 0.95),
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
        "total": sum(ordered),
        "over_max": None if limit is None else sum(1 for length in ordered if length > limit),
    }


ROWS = 2 * BATCH_ROWS + 500  # three batches


def test_the_full_reads_token_figures_are_one_passes(tmp_path, tokenizer):
    """Rows of many lengths, some over max_seq_length, some whose prompt fills it (dropped)."""
    rows = [qa(n, words=(n * 7) % 23 + (40 if n % 97 == 0 else 0)) for n in range(ROWS)]
    path = write(tmp_path / "data.jsonl", jsonl(rows))
    encoded = encode_rows(cut_to_length(rows, 32), "prompt_completion", tokenizer)
    expected = figures([len(ids) for ids, _ in encoded], 32)
    expected["dropped"] = sum(1 for _, labels in encoded if all(label == -100 for label in labels[:32]))
    assert expected["over_max"] and expected["dropped"]
    report = inspect_dataset(path, tokenizer, 32, full=True)
    stats = report.token_stats.model_dump()
    assert {key: stats[key] for key in expected} == expected and report.rows == ROWS
    assert [row for row in report.preview] == rows[:5]
    warnings = {problem.code: problem.message for problem in report.warnings}
    assert warnings["dataset_truncation"].startswith(f"{expected['over_max']} of {ROWS} rows are longer")
    assert warnings["dataset_rows_dropped"].startswith(f"{expected['dropped']} of {ROWS} rows have nothing")


def test_the_full_reads_pair_figures_are_one_passes(tmp_path, tokenizer):
    pairs = [
        {"prompt": "Say " + "it " * (n % 13), "chosen": " yes" * (n % 5 + 1), "rejected": " no" * (n % 7 + 1)}
        for n in range(ROWS)
    ]
    path = write(tmp_path / "pairs.jsonl", jsonl(pairs))
    lengths = encode_pairs(cut_to_length(pairs, 16), tokenizer)
    report = inspect_dataset(path, tokenizer, 16, full=True, max_prompt_length=6)
    whole = figures([p + max(c, r) for p, c, r in lengths], 16)
    assert {key: report.token_stats.model_dump()[key] for key in whole} == whole
    for index, part in enumerate(("prompt", "chosen", "rejected")):
        expected = figures([item[index] for item in lengths], 6 if part == "prompt" else None)
        got = report.pair_token_stats[part].model_dump()
        assert {key: got[key] for key in expected} == expected, part
    cut = sum(1 for p, c, r in lengths if min(p, 6) + max(c, r) > 16)
    truncation = next(w for w in report.warnings if w.code == "dataset_truncation")
    assert truncation.message.startswith(f"{cut} of {ROWS} pairs are longer")


def test_a_row_the_chat_template_refuses_in_a_later_batch_is_named_by_its_number(tmp_path, tokenizer):
    """The tiny Llama's template adds each message's content to a string: a tool-call turn without content fails."""
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    tool_call = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "weather"}]},
        {"role": "assistant", "content": "Sunny."},
    ]
    bad = {BATCH_ROWS + 345, 2 * BATCH_ROWS + 12}
    rows = [{"messages": tool_call if n in bad else chat} for n in range(1, ROWS + 1)]
    report = inspect_dataset(write(tmp_path / "chat.jsonl", jsonl(rows)), tokenizer, 64, full=True)
    assert [(p.code, p.message.split(":")[0]) for p in report.errors] == [
        (CHAT_TEMPLATE_ERROR, f"Row {number}") for number in sorted(bad)
    ]
    assert report.token_stats is None
