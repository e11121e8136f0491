"""Hostile input on the dataset and run-folder paths, replayed as a member with a shell would: a dataset row of
megabytes (which the tokenizer turns into gigabytes) is refused, named, wherever rows are read, before it is
tokenized; a folder another user makes on the way to a run folder after the resolve stage's check is never adopted;
and the folders a run makes on the way are never world-writable, whatever the worker's umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from models_registry.outputs import FOREIGN_OWNER
from mtm.audit import Actor
from mtm.shared.owned_files import DIR_MODE
from projects.datasets.errors import DATASET_ROW_TOO_LARGE, DatasetError
from projects.datasets.loading import Sample, load_dataset
from projects.datasets.report import read_dataset
from projects.models import RunStatus
from projects.runs import dataset_snapshot, stages
from projects.runs.config import run_config
from projects.runs.paths import PathChanged, create_run_folder
from projects.services import ProjectInvalid, create_project
from projects.trainer.errors import TrainerError
from projects.trainer.spec import TrainerSpec, read_spec, write_spec
from tests.pipeline_helpers import QA_ROWS, start
from tests.test_output_folder_adoption import SHELL_UID, made_by_another_user
from tests.test_owned_paths import fields
from tests.test_run_folder_attacks import run_of

LIMIT = 64 * 1024  # the row limit these tests set; the huge row is far over it, every real row far under
HUGE_TEXT = "hello world " * 250_000  # 3 MB of text in one row: the attack, scaled down
SHORT_ROWS = [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(30)]


@pytest.fixture
def row_limit(settings):
    settings.MTM_DATASET_MAX_ROW_BYTES = LIMIT
    return LIMIT


def huge_row() -> dict:
    return {"prompt": "Say it:", "completion": HUGE_TEXT}


def huge_row_size(kind: str = "jsonl") -> int:
    if kind == "csv":
        return len(b"Say it:," + HUGE_TEXT.encode())
    return len(json.dumps(huge_row()).encode())


def write_rows(path: Path, rows: list[dict], kind: str = "jsonl") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    else:
        path.write_text("prompt,completion\n" + "".join(f'"{r["prompt"]}","{r["completion"]}"\n' for r in rows))
    return path


def assert_names_the_row(problem, row: int, size: int, *, at_least: bool = False) -> None:
    assert problem.code == DATASET_ROW_TOO_LARGE
    assert problem.message.startswith(f"Row {row} (line ")
    assert f"is {size:,} bytes{' or more' if at_least else ';'}" in problem.message
    assert f"at most {LIMIT:,} bytes (64.0 KiB)" in problem.message
    assert "Shorten, split or remove that row" in problem.hint and "MTM_DATASET_MAX_ROW_BYTES" in problem.hint


# --- the size bound, in every reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv"])
def test_the_full_read_refuses_a_row_over_the_limit_and_names_it(tmp_path, row_limit, kind):
    """The worker's full read (the resolve stage): every row over the limit is named with its size; the others and
    what else is wrong are still reported, and no row is handed on."""
    dataset = write_rows(tmp_path / f"data.{kind}", [*SHORT_ROWS[:10], huge_row(), *SHORT_ROWS[10:]], kind)
    read = read_dataset(dataset, full=True)
    assert read.rows == []
    [problem] = read.report.errors
    if kind == "csv":  # a CSV record is refused as soon as it is longer than the limit: never assembled to measure
        assert_names_the_row(problem, 11, LIMIT + 1, at_least=True)
    else:
        assert_names_the_row(problem, 11, huge_row_size(kind))


def test_a_row_at_the_limit_is_read(tmp_path):
    row = {"prompt": "x" * 100, "completion": "y"}
    size = len(json.dumps(row).encode())
    dataset = write_rows(tmp_path / "data.jsonl", [row, *SHORT_ROWS[:2]])
    assert len(load_dataset(dataset, max_row_bytes=size).rows) == 1 + 2
    with pytest.raises(DatasetError) as refused:
        load_dataset(dataset, max_row_bytes=size - 1)
    assert refused.value.codes == [DATASET_ROW_TOO_LARGE]


def test_a_sample_that_ends_inside_a_huge_row_names_it_too(tmp_path):
    """A bounded read that stops inside a row already longer than a row may be says so, with what it read of it."""
    dataset = write_rows(tmp_path / "data.jsonl", [*SHORT_ROWS[:3], huge_row(), *SHORT_ROWS[3:]])
    before = sum(len(json.dumps(r)) + 1 for r in SHORT_ROWS[:3])
    with pytest.raises(DatasetError) as refused:
        load_dataset(dataset, sample=Sample(bytes=256 * 1024), max_row_bytes=LIMIT)
    [problem] = refused.value.problems
    assert problem.code == DATASET_ROW_TOO_LARGE
    assert problem.message.startswith(f"Row 4 (line 4) is {256 * 1024 - before:,} bytes or more;")


def test_the_form_refuses_a_dataset_starting_with_a_huge_row(team, tiny_llama_in_cache, row_limit):
    """The save's bounded read: the attack's file (one huge row, then 30 short ones) is refused at once."""
    name, _ = tiny_llama_in_cache
    dataset = write_rows(team["root"] / "datasets" / "huge.jsonl", [huge_row(), *SHORT_ROWS])
    data = fields(team["root"], name, dataset_path=str(dataset))
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=Actor.command_line(team["mallory"]), data=data)
    [problem] = refused.value.check.errors["dataset_path"]
    assert_names_the_row(problem, 1, huge_row_size())


def test_the_resolve_stage_refuses_a_row_grown_after_the_save(team, tiny_llama_in_cache, row_limit):
    name, _ = tiny_llama_in_cache
    dataset = write_rows(team["root"] / "datasets" / "mine.jsonl", SHORT_ROWS)
    project = create_project(
        actor=Actor.command_line(team["mallory"]), data=fields(team["root"], name, dataset_path=str(dataset))
    )
    run = start(project, team["mallory"])
    write_rows(dataset, [*SHORT_ROWS, huge_row()])  # after the save's check
    assert stages.resolve_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "resolve", DATASET_ROW_TOO_LARGE)
    assert run.error_message.startswith(f"Row 31 (line 31) is {huge_row_size():,} bytes;")


def test_a_row_grown_after_the_resolve_stage_is_not_in_what_the_trainer_reads(team, tiny_llama_in_cache, row_limit):
    """Grown after the resolve stage's full read: the train stage hands the trainer the copy that stage checked, which
    holds none of it."""
    name, _ = tiny_llama_in_cache
    dataset = write_rows(team["root"] / "datasets" / "mine.jsonl", SHORT_ROWS)
    project = create_project(
        actor=Actor.command_line(team["mallory"]), data=fields(team["root"], name, dataset_path=str(dataset))
    )
    run = start(project, team["mallory"])
    assert stages.resolve_stage(run.pk) is True
    write_rows(dataset, [huge_row(), *SHORT_ROWS])
    run.refresh_from_db()
    work = stages.run_dir(run.pk)
    assert dataset_snapshot.snapshot_problem(run_config(run), work) is None
    assert HUGE_TEXT not in dataset_snapshot.dataset_snapshot(work, str(dataset)).read_text()


def test_the_trainer_refuses_a_row_over_the_limit_before_tokenizing(tmp_path, tiny_llama_dir):
    """The trainer child's own bound, whatever reaches it: its spec carries the worker's limit."""
    from transformers import AutoTokenizer

    from projects.trainer.run import build_datasets

    dataset = write_rows(tmp_path / "mine.jsonl", [huge_row(), *SHORT_ROWS])
    common = dict(model_path=tiny_llama_dir, model_name="tiny", dataset_path=dataset, output_dir=tmp_path / "out")
    with pytest.raises(TrainerError) as refused:
        build_datasets(TrainerSpec(**common, max_row_bytes=LIMIT), AutoTokenizer.from_pretrained(tiny_llama_dir))
    assert refused.value.code == DATASET_ROW_TOO_LARGE
    assert refused.value.message.startswith(f"Row 1 (line 1) is {huge_row_size():,} bytes;")


def test_the_trainer_spec_carries_the_limit(tmp_path):
    dataset = write_rows(tmp_path / "data.jsonl", QA_ROWS)
    common = dict(model_path=tmp_path, model_name="m", dataset_path=dataset, output_dir=tmp_path / "out")
    spec_file = tmp_path / "spec.json"
    assert read_spec(write_spec(TrainerSpec(**common, max_row_bytes=LIMIT), spec_file)).max_row_bytes == LIMIT
    spec_file.write_text(json.dumps({**TrainerSpec(**common).model_dump(mode="json"), "max_row_bytes": 0}))
    with pytest.raises(TrainerError) as refused:
        read_spec(spec_file)
    assert "max_row_bytes 0 is not a number of bytes" in refused.value.message


# --- the folders on the way to a run folder --------------------------------------------------------------------


def test_a_folder_made_on_the_way_after_the_resolve_check_is_not_adopted(team, tiny_llama_in_cache):
    """The project's output directory (and a folder above it) did not exist at the resolve stage's check; another
    member makes the folder above it before the worker creates the run's folder. The worker refuses it, named, and
    makes nothing inside it."""
    name, _ = tiny_llama_in_cache
    target = team["root"] / "outputs" / "team" / "alice"
    data = fields(team["root"], name, name="alice's", output_directory=str(target))
    project = create_project(actor=Actor.command_line(team["alice"]), data=data)
    run = run_of(project, team["alice"])
    planted = made_by_another_user(team["root"] / "outputs" / "team")
    with pytest.raises(PathChanged) as refused:
        create_run_folder(run)
    problem = refused.value.problem
    assert problem.code == FOREIGN_OWNER
    assert f"is inside {planted}, which belongs to uid {SHELL_UID}" in problem.message
    assert f"chown {os.geteuid()} {planted}" in problem.hint
    assert not any(planted.iterdir())


def test_folders_a_run_makes_on_the_way_are_not_world_writable(team, tiny_llama_in_cache):
    name, _ = tiny_llama_in_cache
    target = team["root"] / "outputs" / "new" / "deeper"
    project = create_project(
        actor=Actor.command_line(team["alice"]), data=fields(team["root"], name, output_directory=str(target))
    )
    run = run_of(project, team["alice"])
    umask = os.umask(0)
    try:
        os.close(create_run_folder(run))
    finally:
        os.umask(umask)
    for folder in (target.parent, target, Path(run.run_folder)):
        assert stat.S_IMODE(folder.stat().st_mode) == DIR_MODE, folder


# --- the second hostile pass: records assembled before their size was known -------------------------------------


def _peak_while(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "record",
    [",".join(["x"] * 2_000_000), '"' + "y" * 4_000_000 + '"'],
    ids=["millions-of-fields-on-one-line", "one-quoted-field"],
)
def test_a_csv_record_over_the_limit_is_refused_before_it_is_assembled(tmp_path, record):
    """csv built a 20-million-field record (1.5 GB) before the row's size was checked."""
    path = tmp_path / "wide.csv"
    path.write_text("text\n" + record + "\nshort\n")
    caught = []

    def read():
        with pytest.raises(DatasetError) as refused:
            load_dataset(path, max_row_bytes=64 * 1024)
        caught.append(refused.value)

    assert _peak_while(read) < 16 * 1024**2
    [problem] = caught[0].problems
    assert (
        problem.code == DATASET_ROW_TOO_LARGE and "Row 1 (line 2)" in problem.message and "or more" in problem.message
    )


def test_a_huge_json_array_is_refused_before_it_is_read(tmp_path):
    """A JSON array is decoded whole, at several times its size: past MAX_JSON_ARRAY_BYTES it is refused unread."""
    from projects.datasets.loading import MAX_JSON_ARRAY_BYTES

    path = tmp_path / "rows.json"
    path.write_bytes(b'[{"text": "a"}' + b" " * MAX_JSON_ARRAY_BYTES + b"]")
    with pytest.raises(DatasetError) as refused:
        load_dataset(path)
    [problem] = refused.value.problems
    assert problem.code == "dataset_too_large" and "JSON Lines" in problem.hint


def test_a_number_too_long_for_python_is_not_valid_json_rather_than_a_500(tmp_path):
    """A 5,000-digit integer in a planted config.json made json.loads raise a plain ValueError: the home page,
    the Models list and the model page answered 500 for every member."""
    from models_registry.bounded_json import parse_bytes

    read = parse_bytes(b'{"model_type": "llama", "max_position_embeddings": ' + b"9" * 5000 + b"}")
    assert read.value is None and read.problem and read.problem.startswith("is not valid JSON")


def test_a_planted_safetensors_header_is_not_parsed_by_the_estimate(tmp_path):
    from projects.runs.scheduling.memory_estimate import EstimateError, read_model_shape

    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    with open(folder / "model.safetensors", "wb") as fh:
        fh.write((95 * 1024**2).to_bytes(8, "little"))
        fh.truncate(95 * 1024**2 + 8)  # sparse
    with pytest.raises(EstimateError, match="MB safetensors header"):
        read_model_shape(folder)


def test_the_context_length_check_does_not_parse_a_config_of_nested_lists(tmp_path):
    from projects.context_length import context_length

    (tmp_path / "config.json").write_text(
        '{"max_position_embeddings": 512, "x": [' + ",".join(["[]"] * 1_000_000) + "]}"
    )
    found = []
    assert _peak_while(lambda: found.append(context_length(str(tmp_path)))) < 32 * 1024**2
    assert found == [None]
