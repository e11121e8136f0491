"""What the resolve stage checks of a dataset is what the run trains on: the stage copies the dataset and the eval
file (from the file opened without following links, never a hard link) into the run's work folder, checks every row
of the copies and records their digests; the trainer reads only the copies, and refuses more rows than
MTM_DATASET_MAX_ROWS itself. A member who rewrites her own file in place after the check (same inode, no link, no
rename) changes nothing the run reads.

The stages as the worker calls them, a real trainer child, the tiny Llama in a real HF cache layout."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from mtm.audit import Actor
from mtm.shared.files import file_sha256
from projects.datasets.errors import DATASET_TOO_MANY_ROWS
from projects.models import RunStatus, TrainingRun
from projects.runs import dataset_snapshot, stages
from projects.services import create_project
from projects.trainer.errors import TrainerError
from projects.trainer.outputs import MANIFEST_NAME
from projects.trainer.run import build_datasets
from projects.trainer.spec import TrainerSpec, read_spec, write_spec
from tests.pipeline_helpers import start
from tests.test_dataset_row_bound import jsonl_text, write
from tests.test_owned_paths import fields

pytestmark = pytest.mark.django_db

LIMIT = 50  # MTM_DATASET_MAX_ROWS in these tests
CHECKED_ROWS = 10


@pytest.fixture
def row_bound(settings) -> int:
    settings.MTM_DATASET_MAX_ROWS = LIMIT
    return LIMIT


def her_project(team, model_name: str, **changes):
    """Mallory's project on her own files, each writable by anyone (0666): the files a hard link could reach."""
    dataset = write(team["root"] / "datasets" / "mine.jsonl", jsonl_text(CHECKED_ROWS))
    os.chmod(dataset, 0o666)
    data = fields(team["root"], model_name, dataset_path=str(dataset), **changes)
    return create_project(actor=Actor.command_line(team["mallory"]), data=data)


def rewrite_in_place(path: Path, text: str) -> None:
    """The member's rewrite of her own file: the same inode, no link, no rename."""
    inode = os.stat(path).st_ino
    with open(path, "r+") as file:
        file.truncate(0)
        file.write(text)
    assert os.stat(path).st_ino == inode


def manifest_of(run: TrainingRun) -> dict:
    return json.loads((Path(run.run_folder) / MANIFEST_NAME).read_text())


def test_rows_written_past_the_bound_after_the_resolve_stage_are_never_trained_on(team, tiny_llama_in_cache, row_bound):
    name, _ = tiny_llama_in_cache
    eval_file = write(team["root"] / "datasets" / "eval.jsonl", jsonl_text(CHECKED_ROWS))
    project = her_project(team, name, eval_dataset_path=str(eval_file))
    checked = {path: Path(path).read_bytes() for path in (project.dataset_path, project.eval_dataset_path)}
    run = start(project, team["mallory"])
    assert stages.resolve_stage(run.pk) is True
    run.refresh_from_db()
    assert (run.config["dataset_rows"], run.config["eval_dataset_rows"]) == (CHECKED_ROWS, CHECKED_ROWS)
    recorded = (run.config["dataset_sha256"], run.config["eval_dataset_sha256"])
    for path in checked:
        rewrite_in_place(Path(path), jsonl_text(LIMIT * 100))

    assert stages.train_stage(run.pk) is True, TrainingRun.objects.get(pk=run.pk).log_tail[-3000:]
    run.refresh_from_db()
    manifest = manifest_of(run)
    assert manifest["dataset"]["dataset_rows"] == CHECKED_ROWS
    assert (manifest["dataset"]["sha256"], manifest["eval_dataset"]["sha256"]) == recorded
    assert recorded == tuple(hashlib.sha256(content).hexdigest() for content in checked.values())
    assert (run.config["dataset_sha256"], run.config["eval_dataset_sha256"]) == recorded


def test_the_resolve_stage_checks_its_own_copy_and_it_is_never_her_file(team, tiny_llama_in_cache):
    name, _ = tiny_llama_in_cache
    eval_file = write(team["root"] / "datasets" / "eval.jsonl", jsonl_text(CHECKED_ROWS))
    os.chmod(eval_file, 0o666)
    project = her_project(team, name, eval_dataset_path=str(eval_file))
    run = start(project, team["mallory"])
    assert stages.resolve_stage(run.pk) is True
    run.refresh_from_db()
    work = stages.run_dir(run.pk)
    copies = {
        project.dataset_path: dataset_snapshot.dataset_snapshot(work, project.dataset_path),
        project.eval_dataset_path: dataset_snapshot.eval_snapshot(work, project.eval_dataset_path),
    }
    for source, copy in copies.items():
        info, theirs = os.lstat(copy), os.stat(source)
        assert stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and theirs.st_nlink == 1
        assert (info.st_dev, info.st_ino) != (theirs.st_dev, theirs.st_ino)
        assert stat.S_IMODE(info.st_mode) == 0o600 and stat.S_IMODE(os.stat(copy.parent).st_mode) == 0o700
        assert copy.read_bytes() == Path(source).read_bytes()
    assert run.config["dataset_sha256"] == file_sha256(copies[project.dataset_path])
    assert run.config["eval_dataset_sha256"] == file_sha256(copies[project.eval_dataset_path])


def test_a_copy_changed_after_the_resolve_stage_is_not_trained_on(team, tiny_llama_in_cache):
    name, _ = tiny_llama_in_cache
    project = her_project(team, name)
    run = start(project, team["mallory"])
    assert stages.resolve_stage(run.pk) is True
    copy = dataset_snapshot.dataset_snapshot(stages.run_dir(run.pk), project.dataset_path)
    copy.write_text(jsonl_text(CHECKED_ROWS + 1))
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "train", "dataset_snapshot_changed")
    assert project.dataset_path in run.error_message and "Start the run again" in run.error_hint
    assert not copy.exists() and not (Path(run.run_folder) / MANIFEST_NAME).exists()


def test_a_failed_resolve_leaves_no_copy(team, tiny_llama_in_cache, row_bound):
    name, _ = tiny_llama_in_cache
    project = her_project(team, name)
    run = start(project, team["mallory"])
    rewrite_in_place(Path(project.dataset_path), jsonl_text(LIMIT + 1))
    assert stages.resolve_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.stage_failed, run.error_code) == ("resolve", DATASET_TOO_MANY_ROWS)
    assert run.error_message.startswith(f"mine.jsonl has more than {LIMIT:,} rows")
    assert not (stages.run_dir(run.pk) / dataset_snapshot.SNAPSHOT_DIR).exists()


@pytest.mark.parametrize("which", ["dataset", "eval file"])
def test_the_trainer_refuses_more_rows_than_its_spec_allows(tmp_path, tiny_llama_dir, which):
    """The trainer child's own bound, whatever reaches it: the rows past it are counted, never parsed."""
    many = write(tmp_path / "many.jsonl", jsonl_text(LIMIT + 1))
    few = write(tmp_path / "few.jsonl", jsonl_text(CHECKED_ROWS))
    dataset, eval_file = (many, few) if which == "dataset" else (few, many)
    spec = TrainerSpec(
        model_path=tiny_llama_dir,
        model_name="tiny",
        dataset_path=dataset,
        eval_dataset_path=eval_file,
        output_dir=tmp_path / "out",
        max_rows=LIMIT,
    )
    assert spec.max_rows == LIMIT
    with pytest.raises(TrainerError) as refused:
        build_datasets(spec, AutoTokenizer.from_pretrained(tiny_llama_dir))
    assert refused.value.code == DATASET_TOO_MANY_ROWS
    assert refused.value.message.startswith(f"many.jsonl has more than {LIMIT:,} rows")


def test_the_worker_hands_the_trainer_its_row_bound(tmp_path):
    dataset = write(tmp_path / "data.jsonl", jsonl_text(CHECKED_ROWS))
    common = dict(model_path=tmp_path, model_name="m", dataset_path=dataset, output_dir=tmp_path / "out")
    spec_file = tmp_path / "spec.json"
    assert (
        read_spec(write_spec(TrainerSpec(**common), spec_file)).max_rows == 2_000_000
    )  # MTM_DATASET_MAX_ROWS's default
    spec_file.write_text(json.dumps({**TrainerSpec(**common).model_dump(mode="json"), "max_rows": 0}))
    with pytest.raises(TrainerError) as refused:
        read_spec(spec_file)
    assert "max_rows 0 is not a count of rows" in refused.value.message
