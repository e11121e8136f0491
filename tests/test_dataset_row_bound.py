"""A dataset may have at most MTM_DATASET_MAX_ROWS rows: a row costs the worker the same whatever its size, so a
file of tiny rows costs far more than its bytes suggest. A file with more is refused, naming the file and what to do,
by the as-you-type check, the save, the upload and the resolve stage, which stops reading at the first row past the
bound. A request reads only the first rows; the rows past them are counted without being parsed.

Real files, the real services and views, the resolve stage as the worker runs it, the tiny Llama in a real HF cache
layout. The bound is set small here, past the 2,000 rows a request reads, so the request counts the rest."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from mtm.audit import Actor
from projects.datasets import row_count
from projects.datasets.loading import SAMPLE_ROWS
from projects.datasets.report import read_dataset
from projects.models import RunStatus
from projects.runs import stages
from projects.services import ProjectInvalid, create_project
from tests.api_client import API, make_user_token
from tests.clients import secure_client
from tests.pipeline_helpers import start
from tests.test_owned_paths import fields
from tests.token_counts import HX, counted

LIMIT = 2_500
TOO_MANY_ROWS = "dataset_too_many_rows"
assert LIMIT > SAMPLE_ROWS  # the request's read stops before the bound: what lies past it is counted


@pytest.fixture
def row_bound(settings) -> int:
    settings.MTM_DATASET_MAX_ROWS = LIMIT
    return LIMIT


def csv_text(rows: int, *, lines_per_row: int = 1) -> str:
    """A CSV of prompt/completion rows; with lines_per_row > 1 each completion holds quoted line breaks."""
    completion = "\n".join(f"line {i}" for i in range(lines_per_row))
    return "prompt,completion\n" + "".join(f'"Question {n}?","{completion}"\n' for n in range(rows))


def jsonl_text(rows: int, *, blank_lines: bool = False) -> str:
    gap = "\n   \n\n" if blank_lines else "\n"  # blank lines (spaces only, or empty) between rows are no rows
    return "".join(json.dumps({"prompt": f"Question {n}?", "completion": " Answer."}) + gap for n in range(rows))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def dataset_text(kind: str, rows: int) -> str:
    return csv_text(rows) if kind == "csv" else jsonl_text(rows)


def assert_too_many_rows(problem, name: str) -> None:
    assert problem.code == TOO_MANY_ROWS
    assert problem.message.startswith(f"{name} has more than {LIMIT:,} rows"), problem.message
    assert "Split it" in problem.hint and "ask staff to raise MTM_DATASET_MAX_ROWS" in problem.hint


def save(team, model_name: str, dataset: Path, name: str = "p"):
    data = fields(team["root"], model_name, name=name, dataset_path=str(dataset))
    data["output_directory"] = str(team["root"] / "outputs" / name)
    return create_project(actor=Actor.command_line(team["mallory"]), data=data)


# --- the web: save, as-you-type check, upload --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_save_refuses_a_dataset_over_the_bound_naming_the_file(team, tiny_llama_in_cache, row_bound, kind):
    name, _ = tiny_llama_in_cache
    over = write(team["root"] / "datasets" / f"tiny-rows.{kind}", dataset_text(kind, LIMIT + 1))
    with pytest.raises(ProjectInvalid) as refused:
        save(team, name, over)
    [problem] = refused.value.check.errors["dataset_path"]
    assert_too_many_rows(problem, over.name)
    at_the_bound = write(team["root"] / "datasets" / f"full.{kind}", dataset_text(kind, LIMIT))
    assert save(team, name, at_the_bound, "at the bound").dataset_path == str(at_the_bound)


@pytest.mark.parametrize(
    ("kind", "text_of"),
    [
        ("csv", lambda rows: csv_text(rows, lines_per_row=3)),
        ("jsonl", lambda rows: jsonl_text(rows, blank_lines=True)),
    ],
    ids=["csv records of three lines", "jsonl with blank lines between rows"],
)
def test_rows_are_counted_not_lines(team, tiny_llama_in_cache, row_bound, kind, text_of):
    """Past the request's read the rows are counted as the reader reads them: a CSV record spans its quoted line
    breaks, and a blank line of JSON Lines is no row. Both files have three times as many lines as the bound."""
    name, _ = tiny_llama_in_cache
    dataset = write(team["root"] / "datasets" / f"lines.{kind}", text_of(LIMIT))
    assert dataset.read_text().count("\n") >= 3 * LIMIT
    assert save(team, name, dataset).dataset_path == str(dataset)
    grown = write(team["root"] / "datasets" / f"grown.{kind}", text_of(LIMIT + 1))
    with pytest.raises(ProjectInvalid) as refused:
        save(team, name, grown, "grown")
    [problem] = refused.value.check.errors["dataset_path"]
    assert_too_many_rows(problem, grown.name)


def test_the_as_you_type_check_says_so_under_the_box(team, row_bound):
    over = write(team["root"] / "datasets" / "tiny-rows.csv", csv_text(LIMIT + 1))
    client = secure_client(team["mallory"])
    response = client.get("/projects/check-dataset/", {"dataset_path": str(over)}, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert f"tiny-rows.csv has more than {LIMIT:,} rows" in html and "MTM_DATASET_MAX_ROWS" in html


def test_an_upload_over_the_bound_is_refused_and_not_kept(db, portal_roots, row_bound, client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    _, token = make_user_token("uploader")
    content = csv_text(LIMIT + 1).encode()
    response = client.post(
        API + "/datasets",
        {"file": SimpleUploadedFile("tiny rows.csv", content)},
        secure=True,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422, response.content
    [error] = response.json()["errors"]
    assert (error["code"], error["field"]) == (TOO_MANY_ROWS, "file")
    assert error["message"].startswith(f"tiny_rows.csv has more than {LIMIT:,} rows")
    uploads = portal_roots / "media" / "datasets"
    assert not uploads.exists() or not any(uploads.iterdir())


def json_rows(rows: int) -> list[dict]:
    """Chat rows whose messages are nested lists and objects, and whose strings hold commas, brackets and escaped
    quotes and backslashes: none of them separates two rows of the array."""
    text = 'Is it [a, b] or {c, d}? She said "yes, \\ no", then ],}'
    return [
        {"messages": [{"role": "user", "content": f"{text} {n}"}, {"role": "assistant", "content": "A, ["}]}
        for n in range(rows)
    ]


def test_a_json_array_over_the_bound_is_refused_by_the_checks_count_not_first_by_the_resolve_stage(
    team, tiny_llama_in_cache, row_bound
):
    """A request reads only an array's first rows (the array may hold all of them on one line); the worker that
    counts the check's tokens counts the rest without decoding them. The check then says so under the box, and the
    save refuses the file, naming it, with the bound and what to do."""
    name, _ = tiny_llama_in_cache
    client = secure_client(team["mallory"])
    params = {"model_name": name, "max_seq_length": "64"}
    at_the_bound = write(team["root"] / "datasets" / "full.json", json.dumps(json_rows(LIMIT)))
    fragment = client.get("/projects/check-dataset/", {"dataset_path": str(at_the_bound), **params}, **HX)
    shown = counted(client, fragment.content.decode(), at_the_bound, team["mallory"])
    assert TOO_MANY_ROWS not in shown and "more than" not in shown
    assert save(team, name, at_the_bound, "at the bound").dataset_path == str(at_the_bound)

    over = write(team["root"] / "datasets" / "tiny-rows.json", json.dumps(json_rows(LIMIT + 1)))
    assert over.read_text().count("\n") == 0
    fragment = client.get("/projects/check-dataset/", {"dataset_path": str(over), **params}, **HX).content.decode()
    assert "more than" not in fragment  # the request has read the first rows only
    shown = html.unescape(counted(client, fragment, over, team["mallory"]))
    assert f"tiny-rows.json has more than {LIMIT:,} rows" in shown and "MTM_DATASET_MAX_ROWS" in shown
    with pytest.raises(ProjectInvalid) as refused:
        save(team, name, over)
    [problem] = refused.value.check.errors["dataset_path"]
    assert_too_many_rows(problem, over.name)


def test_the_resolve_stage_counts_a_json_arrays_rows_before_decoding_one(tmp_path, row_bound):
    """The first row is broken, yet only the number of rows is named: they were counted before any was decoded (a
    worker's full read of millions of tiny rows would take minutes before it reached the bound)."""
    rows = json_rows(LIMIT + 1)
    text = json.dumps([{"messages": 1}, *rows[1:]])
    report = read_dataset(write(tmp_path / "data.json", text), full=True).report
    [problem] = report.errors
    assert_too_many_rows(problem, "data.json")
    report = read_dataset(write(tmp_path / "bound.json", json.dumps(rows[:LIMIT])), full=True).report
    assert report.valid and report.rows == LIMIT


# --- the worker: the resolve stage's full read -------------------------------------------------------------------


def test_the_resolve_stage_refuses_a_dataset_grown_past_the_bound(team, tiny_llama_in_cache, row_bound):
    name, _ = tiny_llama_in_cache
    dataset = write(team["root"] / "datasets" / "mine.csv", csv_text(LIMIT))
    project = save(team, name, dataset)
    run = start(project, team["mallory"])
    write(dataset, csv_text(LIMIT + 1))  # after the save's check
    assert stages.resolve_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "resolve", TOO_MANY_ROWS)
    assert run.error_message.startswith(f"mine.csv has more than {LIMIT:,} rows")
    assert "MTM_DATASET_MAX_ROWS" in run.error_hint


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_the_full_read_stops_at_the_first_row_past_the_bound(tmp_path, row_bound, kind):
    """Nothing after the row past the bound is read: a broken row after it is not named. A CSV's rows are counted
    before any is parsed; a JSON array's reader stops there."""
    rows = [{"prompt": f"Question {n}?", "completion": " Answer."} for n in range(LIMIT + 1)]
    if kind == "csv":
        text = csv_text(LIMIT + 1) + '"Question?"\n'  # one value where the header names two columns
    else:
        text = json.dumps([*rows, {"prompt": 1, "completion": 2}], indent=1)  # numbers, not strings
    report = read_dataset(write(tmp_path / f"data.{kind}", text), full=True).report
    [problem] = report.errors
    assert_too_many_rows(problem, f"data.{kind}")
    at_the_bound = json.dumps(rows[:LIMIT]) if kind == "json" else csv_text(LIMIT)
    report = read_dataset(write(tmp_path / f"bound.{kind}", at_the_bound), full=True).report
    assert report.valid and report.rows == LIMIT


def test_a_quoted_csv_too_long_to_count_in_a_request_is_left_to_the_resolve_stage(team, tiny_llama_in_cache, row_bound):
    """A CSV with quotes and more lines than the bound is counted through the csv module; a request parses at most
    _CSV_EXACT_CHARS of it for that. Past them the web does not know (the save goes through) and the resolve stage,
    which reads the file as the trainer does, refuses it."""
    name, _ = tiny_llama_in_cache
    long_answer = "x" * (2 * row_count._CSV_EXACT_CHARS // LIMIT)
    text = "prompt,completion\n" + "".join(f'"Question {n}?","{long_answer}"\n' for n in range(LIMIT + 1))
    dataset = write(team["root"] / "datasets" / "long-rows.csv", text)
    assert len(text) > row_count._CSV_EXACT_CHARS
    project = save(team, name, dataset)  # not known in the request: the worker decides
    run = start(project, team["mallory"])
    assert stages.resolve_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "resolve", TOO_MANY_ROWS)
    assert run.error_message.startswith(f"long-rows.csv has more than {LIMIT:,} rows")
