"""A base model from the shared Hugging Face cache, in which members can write, changed after the resolve stage
checked it: an entry of the snapshot swapped for a link to another member's private upload (or to any file only the
portal may read). The worker opens every file of the snapshot as the check accepted it (the snapshot's entries only as
links into the repo's own blobs/, each blob a regular file, nothing else followed) and hands the trainer and the
validation child a private folder whose entries lead to the descriptors it holds. A swap before that open fails the
stage naming the file; a swap after it changes nothing the children read; records and messages keep naming the cache
path.

The stages as the worker calls them, a real trainer child, the tiny Llama in a real HF cache layout, a real upload."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_registry.lookup import resolve_model
from models_registry.models import ModelOverride
from mtm.audit import Actor
from projects.datasets.uploads import receive_upload
from projects.models import RunStatus, TrainingRun
from projects.runs import stages
from projects.runs.base_model_files import MAX_HELD_FILES
from projects.runs.base_model_folder import open_base_model
from projects.services import create_project
from projects.trainer.spec import TrainerSpec, read_spec, write_spec
from tests.hfcache import add_file, make_model_repo, set_ref
from tests.pipeline_helpers import start, write_jsonl
from tests.test_owned_paths import fields

pytestmark = pytest.mark.django_db

ALICES_SECRET = b'{"messages": [{"role": "user", "content": "ALICE-SECRET what is two plus two?"}]}\n' * 4
TEMPLATE = "chat_template.jinja"
# Plain text rows: training never renders the chat template, so the only trace of it is the file the trainer saves.
TEXT_ROWS = [{"text": f"the quick brown fox {i} jumps over the lazy dog"} for i in range(12)]


def alices_upload(team) -> str:
    upload = receive_upload(Actor.command_line(team["alice"]), SimpleUploadedFile("s.jsonl", ALICES_SECRET), "s.jsonl")
    return str(upload)


def swap_for_link(entry: Path, target: str) -> None:
    """Her swap: the snapshot entry replaced at once by a link to `target` (made aside, then renamed over it)."""
    aside = entry.with_name(".swap")
    aside.symlink_to(target)
    os.rename(aside, entry)


def resolved_run(team, model_name: str, **changes) -> TrainingRun:
    """Mallory's run on `model_name`, through the resolve stage as the worker runs it."""
    dataset = write_jsonl(team["root"] / "datasets" / "text.jsonl", TEXT_ROWS)
    data = fields(team["root"], model_name, dataset_path=str(dataset), **changes)
    project = create_project(actor=Actor.command_line(team["mallory"]), data=data)
    run = start(project, team["mallory"])
    assert stages.resolve_stage(run.pk) is True, TrainingRun.objects.get(pk=run.pk).error_message
    run.refresh_from_db()
    return run


def holds_none_of_it(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert b"ALICE-SECRET" not in path.read_bytes(), path


def test_a_snapshot_file_swapped_for_a_link_after_resolve_refuses_the_run_and_nothing_of_it_is_read(
    team, tiny_llama_in_cache
):
    name, snapshot = tiny_llama_in_cache
    secret = alices_upload(team)
    run = resolved_run(team, name)
    assert run.resolved_path == str(snapshot)
    swap_for_link(snapshot / TEMPLATE, secret)

    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "train", "base_model_changed"), (
        run.error_message,
        run.log_tail[-2000:],
    )
    assert f"{snapshot}/{TEMPLATE}" in run.error_message and "link" in run.error_message
    assert "hf download" in run.error_hint and "start" in run.error_hint.lower()
    assert "ALICE-SECRET" not in run.error_message + run.log_tail
    out = Path(run.run_folder)
    assert not (out / TEMPLATE).exists() and not (out / "adapter_config.json").exists()  # nothing trained
    holds_none_of_it(out.parent)
    holds_none_of_it(stages.run_dir(run.pk))


def test_the_private_folder_still_reaches_the_checked_files_after_a_swap(team, tiny_llama_in_cache, tmp_path):
    name, snapshot = tiny_llama_in_cache
    secret = alices_upload(team)
    run = resolved_run(team, name)
    checked = (snapshot / TEMPLATE).read_text()
    with open_base_model(run) as base:  # the worker's open, right before it starts the trainer
        swap_for_link(snapshot / TEMPLATE, secret)
        private = Path(base.path_for(os.getpid())).resolve()
        assert private.parent == stages.run_dir(run.pk) and stat.S_IMODE(os.stat(private).st_mode) == 0o700
        for read_by in (base.path_for(os.getpid()), base.path_for()):  # the trainer's, the validation child's
            assert Path(read_by, TEMPLATE).read_text() == checked
            assert json.loads(Path(read_by, "config.json").read_text())["model_type"] == "llama"
        written = TrainerSpec(
            model_path=base.path_for(os.getpid()),
            model_shown=run.resolved_path,
            model_name=name,
            dataset_path=run.project.dataset_path,
            output_dir=run.run_folder,
        )
        spec = read_spec(write_spec(written, tmp_path / "spec.json"))
        assert (str(spec.model_path), spec.model_named) == (base.path_for(os.getpid()), str(snapshot))
    assert not private.exists()  # given back with the descriptors
    assert Path(snapshot, TEMPLATE).read_bytes() == ALICES_SECRET  # her link is what the path reaches now


def test_a_snapshot_swapped_before_validation_is_not_read(team, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    secret = alices_upload(team)
    run = resolved_run(team, name, validation_prompt="Say hello:")
    assert stages.train_stage(run.pk) is True, TrainingRun.objects.get(pk=run.pk).log_tail[-3000:]
    assert (Path(run.run_folder) / TEMPLATE).read_text() == (snapshot / TEMPLATE).read_text()
    assert not list(stages.run_dir(run.pk).glob(".base-model-*"))  # the private folder went with the descriptors
    swap_for_link(snapshot / "tokenizer_config.json", secret)

    stages.validate_stage(run.pk)
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "validate", "base_model_changed")
    assert f"{snapshot}/tokenizer_config.json" in run.error_message
    holds_none_of_it(Path(run.run_folder).parent)


# --- what the worker accepts of a snapshot, file by file --------------------------------------------------------


def cache_run(team, hf_cache: Path, model_name: str) -> tuple[TrainingRun, Path]:
    """A run resolved to the snapshot of `model_name` (a small repo as huggingface_hub writes one)."""
    snapshot = make_model_repo(hf_cache, model_name)
    set_ref(hf_cache, model_name, snapshot.name)
    resolution = resolve_model(model_name)
    assert (resolution.valid, resolution.path) == (True, str(snapshot)), resolution.errors
    project = create_project(actor=Actor.command_line(team["mallory"]), data=fields(team["root"], model_name))
    run = TrainingRun.objects.create(
        project=project,
        started_by=team["mallory"],
        status=RunStatus.TRAINING,
        resolved_source="cache",
        resolved_path=str(snapshot),
        resolved_revision=snapshot.name,
    )
    return run, snapshot


def refused(run: TrainingRun, code: str = "base_model_changed") -> str:
    with pytest.raises(Exception) as caught:
        open_base_model(run).close()
    problem = caught.value.problem
    assert problem.code == code, problem.message
    assert problem.hint
    return problem.message


def test_each_way_an_entry_can_stop_being_what_was_checked_is_refused_by_name(team, hf_cache, tmp_path):
    run, snapshot = cache_run(team, hf_cache, "team/small")
    repo = snapshot.parent.parent
    blob = (snapshot / "config.json").resolve()
    outside = tmp_path / "outside.json"
    outside.write_text("{}")

    swap_for_link(snapshot / "config.json", str(outside))  # a link out of the cache
    assert f"{snapshot}/config.json" in refused(run)
    swap_for_link(snapshot / "config.json", os.path.relpath(blob, snapshot))  # back as huggingface_hub made it
    open_base_model(run).close()

    other = make_model_repo(hf_cache, "team/other", config={"model_type": "llama", "other": 1}).parent.parent
    theirs = next(p for p in (other / "blobs").iterdir() if b'"other"' in p.read_bytes())
    swap_for_link(snapshot / "config.json", f"../../../{other.name}/blobs/{theirs.name}")  # another repo's blob
    assert f"{snapshot}/config.json" in refused(run)
    swap_for_link(snapshot / "config.json", f"../../blobs/{blob.name}")

    blob.rename(blob.with_name("aside"))  # the blob swapped for a link
    blob.symlink_to(outside)
    assert f"{repo}/blobs/{blob.name}" in refused(run)
    blob.unlink()
    os.mkfifo(blob)  # a FIFO: never waited on
    assert "not a regular file" in refused(run)
    blob.unlink()
    assert "gone" in refused(run)  # a dangling link
    blob.with_name("aside").rename(blob)

    (snapshot / "tokenizer.json").unlink()  # a plain file in the snapshot is what it is, if regular
    (snapshot / "tokenizer.json").write_text('{"version": "1.0"}')
    with open_base_model(run) as base:
        assert Path(base.path_for(), "tokenizer.json").read_text() == '{"version": "1.0"}'
    (snapshot / "tokenizer.json").unlink()
    os.mkfifo(snapshot / "tokenizer.json")
    assert f"{snapshot}/tokenizer.json" in refused(run)


def test_subfolders_of_a_snapshot_are_held_as_its_files_are(team, hf_cache):
    run, snapshot = cache_run(team, hf_cache, "team/nested")
    add_file(hf_cache, "team/nested", "onnx/model.onnx", b"ONNX", snapshot.name)
    with open_base_model(run) as base:
        assert Path(base.path_for(), "onnx", "model.onnx").read_bytes() == b"ONNX"
    (snapshot / "onnx").rename(snapshot.parent / "elsewhere")  # the folder swapped for a link to a copy elsewhere
    (snapshot / "onnx").symlink_to(snapshot.parent / "elsewhere")
    assert f"{snapshot}/onnx" in refused(run)


def test_the_snapshot_folder_itself_swapped_for_a_link_is_refused(team, hf_cache, tmp_path):
    run, snapshot = cache_run(team, hf_cache, "team/moved")
    snapshot.rename(tmp_path / "away")
    snapshot.symlink_to(tmp_path / "away")
    assert str(snapshot) in refused(run)


def test_a_snapshot_with_more_files_than_the_worker_holds_is_refused_before_any_is_opened(team, hf_cache):
    run, snapshot = cache_run(team, hf_cache, "team/wide")
    for i in range(MAX_HELD_FILES):
        (snapshot / f"extra-{i:04}.txt").symlink_to(os.path.relpath((snapshot / "config.json").resolve(), snapshot))
    message = refused(run, "base_model_too_many_files")
    assert str(snapshot) in message and str(MAX_HELD_FILES) in message


def override_folder(tiny_llama_dir: Path, folder: Path) -> Path:
    """Staff's override for "team/overridden": a copy of the tiny Llama whose weights are reached by a link inside it."""
    folder.mkdir()
    for src in tiny_llama_dir.iterdir():
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "weights").mkdir()
    (folder / "model.safetensors").rename(folder / "weights" / "model.safetensors")
    (folder / "model.safetensors").symlink_to("weights/model.safetensors")
    ModelOverride.objects.create(model_name="team/overridden", path=str(folder), enabled=True)
    return folder


def test_an_override_folder_is_held_with_links_only_inside_it(team, hf_cache, tiny_llama_dir, tmp_path):
    """Staff's override folder: its files are held too; a link inside it is followed, one leaving it is refused."""
    folder = override_folder(tiny_llama_dir, tmp_path / "override")
    project = create_project(actor=Actor.command_line(team["mallory"]), data=fields(team["root"], "team/overridden"))
    run = TrainingRun.objects.create(
        project=project, status=RunStatus.TRAINING, resolved_source="override", resolved_path=str(folder)
    )
    weights = (tiny_llama_dir / "model.safetensors").read_bytes()
    with open_base_model(run) as base:
        assert Path(base.path_for(), "model.safetensors").read_bytes() == weights
    swap_for_link(folder / "config.json", alices_upload(team))
    assert f"{folder}/config.json" in refused(run)


def test_a_run_on_an_override_trains_and_validates_through_the_held_files(team, hf_cache, tiny_llama_dir, tmp_path):
    folder = override_folder(tiny_llama_dir, tmp_path / "override")
    run = resolved_run(team, "team/overridden", validation_prompt="Say hello:")
    assert (run.resolved_source, run.resolved_path) == ("override", str(folder))
    assert stages.train_stage(run.pk) is True, TrainingRun.objects.get(pk=run.pk).log_tail[-3000:]
    stages.validate_stage(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.validation)
    assert json.loads((Path(run.run_folder) / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        str(folder)
    )
    assert not list(stages.run_dir(run.pk).glob(".base-model-*"))
