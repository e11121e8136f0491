"""Run folders the worker makes and owns, under attack by a member with a shell who can write in her own output
folder: a run folder planted before the run starts with links in it, links planted where the trainer's saves land,
a dataset swapped for a link before the resolve stage reads it, a run folder swapped before validation, and files
in an adapter's folder that no trainer writes. Each test replays the attack and checks that nothing was written
through or read, and that the member is told what happened."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from mtm.audit import Actor
from mtm.shared.owned_files import DIR_MODE, FILE_MODE
from projects.datasets.uploads import receive_upload
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.publishing.adapter_archive import AdapterUnavailable, adapter_archive
from projects.runs import stages
from projects.runs.paths import create_run_folder, reopen_run_folder
from projects.runs.records import run_folder
from projects.runs.validation.checks import validate_output
from projects.services import create_project
from projects.trainer.errors import TrainerError
from projects.trainer.outputs import MANIFEST_NAME
from projects.trainer.spec import TrainerSpec, read_spec, write_spec
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, copy_dataset_as_resolve_does, write_jsonl
from tests.test_owned_paths import QA_BYTES, fields


def as_(user) -> Actor:
    return Actor.command_line(user)


def run_of(project: TrainingProject, user, status: str = RunStatus.RESOLVING, snapshot: Path | None = None):
    """A run as Start leaves it: its folder named run-<id> inside the project's output directory (not made yet)."""
    run = TrainingRun.objects.create(
        project=project,
        started_by=user,
        status=status,
        resolved_source="cache",
        resolved_path=str(snapshot or ""),
    )
    run.run_folder = run_folder(project.output_directory, run.pk)
    run.save(update_fields=["run_folder"])
    return run


def alices_published_folder(root: Path) -> Path:
    """What another member's finished run left: a model she may have published."""
    folder = root / "outputs" / "alice" / "run-1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"ALICE": "config"}')
    (folder / "model.safetensors").write_bytes(b"ALICE-WEIGHTS")
    return folder


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- a run folder planted before the run starts -----------------------------------------------------------------


def test_a_run_folder_planted_before_the_run_fails_it_and_nothing_is_written_through(
    team, tiny_llama_in_cache, tmp_path
):
    name, snapshot = tiny_llama_in_cache
    alices = alices_published_folder(team["root"])
    before = listing(alices)
    data = fields(team["root"], name, hyperparameters={**FAST_HYPERPARAMETERS, "max_steps": 2, "save_steps": 1})
    project = create_project(actor=as_(team["mallory"]), data=data)
    run = run_of(project, team["mallory"], snapshot=snapshot)
    planted = Path(run.run_folder)
    planted.mkdir(parents=True)
    (planted / "checkpoint-1").symlink_to(alices, target_is_directory=True)
    (planted / "config.json").symlink_to(alices / "config.json")
    (planted / "chat_template.jinja").symlink_to(alices / "chat_template.jinja")  # dangling: a file she'd choose
    (planted / "adapter_config.json").symlink_to(tmp_path / "made-by-the-worker.json")  # dangling
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "train", "run_folder_exists")
    assert str(planted) in run.error_message and "already exists" in run.error_message
    assert "Nothing was written" in run.error_message and f"Move or remove {planted}" in run.error_hint
    assert listing(alices) == before and not (alices / "chat_template.jinja").exists()
    assert not (tmp_path / "made-by-the-worker.json").exists()
    assert sorted(p.name for p in planted.iterdir()) == [
        "adapter_config.json",
        "chat_template.jinja",
        "checkpoint-1",
        "config.json",
    ]


# --- links planted where the trainer's saves land ----------------------------------------------------------------


def test_a_link_planted_in_the_run_folder_never_receives_a_save(team, tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    from projects.trainer.saving import prepare_staging, publish_checkpoint, save_final_staged, staging_path

    alices = alices_published_folder(team["root"])
    before = listing(alices)
    out = tmp_path / "run-7"
    written = TrainerSpec(model_path=tiny_llama_dir, model_name="m", dataset_path=__file__, output_dir=out)
    spec = read_spec(write_spec(written, tmp_path / "spec.json"))
    prepare_staging(spec)
    assert stat.S_IMODE((out / spec.staging_dir).stat().st_mode) == 0o700
    # A checkpoint saved by the Trainer into staging, while a link waits under its name in the run folder.
    saved = staging_path(spec) / "checkpoint-4"
    saved.mkdir()
    (saved / "trainer_state.json").write_text("{}")
    (out / "checkpoint-4").symlink_to(alices, target_is_directory=True)
    with pytest.raises(TrainerError) as refused:
        publish_checkpoint(spec, "checkpoint-4", keep=2)
    assert refused.value.code == "output_entry_refused" and "checkpoint-4" in refused.value.message
    assert listing(alices) == before and (out / "checkpoint-4").is_symlink()
    # A library that left a link, or a hard link to a file elsewhere, in what it saved: refused, not moved.
    (out / "checkpoint-4").unlink()
    (saved / "evil").symlink_to(alices / "config.json")
    with pytest.raises(TrainerError, match="checkpoint-4/evil: is a link"):
        publish_checkpoint(spec, "checkpoint-4", keep=2)
    (saved / "evil").unlink()
    os.link(alices / "model.safetensors", saved / "weights")
    with pytest.raises(TrainerError, match="has 2 hard links"):
        publish_checkpoint(spec, "checkpoint-4", keep=2)
    (saved / "weights").unlink()
    publish_checkpoint(spec, "checkpoint-4", keep=2)
    assert (out / "checkpoint-4" / "trainer_state.json").is_file() and not saved.exists()
    # The final save: a dangling link named like a file save_pretrained writes.
    target = tmp_path / "chosen-template.jinja"
    (out / "chat_template.jinja").symlink_to(target)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = "{{ 'TEMPLATE' }}"
    with pytest.raises(TrainerError) as refused:
        save_final_staged(spec, lambda path: tokenizer.save_pretrained(path))
    assert "chat_template.jinja" in refused.value.message and "already exists" in refused.value.message
    assert not target.exists() and (out / "chat_template.jinja").is_symlink()
    assert listing(alices) == before


# --- the resolve stage reads only what the train stage would ------------------------------------------------------


@pytest.mark.parametrize("field", ["dataset_path", "eval_dataset_path"])
def test_the_resolve_stage_refuses_a_file_swapped_for_a_link_to_another_members_upload(
    team, tiny_llama_in_cache, field
):
    name = tiny_llama_in_cache[0]
    upload = receive_upload(as_(team["alice"]), SimpleUploadedFile("a.jsonl", QA_BYTES), "a.jsonl")
    mine = write_jsonl(team["root"] / "datasets" / "mine.jsonl", QA_ROWS * 4)
    project = create_project(actor=as_(team["mallory"]), data=fields(team["root"], name, **{field: str(mine)}))
    run = run_of(project, team["mallory"], status=RunStatus.QUEUED)
    mine.unlink()
    mine.symlink_to(upload)  # after the save and Start checks, before the resolve stage reads every row
    assert stages.resolve_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed) == (RunStatus.FAILED, "resolve")
    assert run.error_code in ("dataset_changed", "upload_not_yours") and str(mine) in run.error_message
    assert "q7" not in run.error_message + run.error_hint + run.log_tail  # nothing of alice's rows
    assert run.config.get(field.replace("_path", "_rows")) in (None, 0)


# --- a real trained run: modes, and validation only of the folder it created -------------------------------------


@pytest.mark.slow
def test_a_trained_runs_files_are_0644_and_validation_reads_only_the_folder_it_created(team, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    hyper = {**FAST_HYPERPARAMETERS, "max_steps": 3, "save_steps": 1, "save_total_limit": 1}
    data = fields(team["root"], name, hyperparameters={**hyper, "merge_after_training": True})
    project = create_project(actor=as_(team["mallory"]), data=data)
    run = run_of(project, team["mallory"], snapshot=snapshot)
    copy_dataset_as_resolve_does(run)
    assert stages.train_stage(run.pk) is True, TrainingRun.objects.get(pk=run.pk).log_tail[-3000:]
    folder = Path(run.run_folder)
    found = {str(p.relative_to(folder)): p.lstat() for p in folder.rglob("*")}
    assert "model.safetensors" in " ".join(found) and "merged/config.json" in found and MANIFEST_NAME in found
    assert sorted(n for n in found if "/" not in n and n.startswith("checkpoint-")) == ["checkpoint-3"]  # rotated
    assert not [n for n in found if n.startswith(".")]  # no staging folder, no marker left
    wrong = {n: oct(stat.S_IMODE(i.st_mode)) for n, i in found.items() if stat.S_ISREG(i.st_mode)}
    assert {n: m for n, m in wrong.items() if m != oct(FILE_MODE)} == {}
    folders = {n: oct(stat.S_IMODE(i.st_mode)) for n, i in found.items() if stat.S_ISDIR(i.st_mode)}
    assert {n: m for n, m in folders.items() if m != oct(DIR_MODE)} == {}
    assert stat.S_IMODE(folder.stat().st_mode) == DIR_MODE
    assert all(stat.S_ISREG(i.st_mode) or stat.S_ISDIR(i.st_mode) for i in found.values())
    assert all(i.st_nlink == 1 for i in found.values() if stat.S_ISREG(i.st_mode))
    # Validation reads the folder through the descriptor the validate stage opens (the child inherits it).
    fd = reopen_run_folder(run)
    try:
        report = validate_output(folder, "Hello", base_model_path=str(snapshot), folder_fd=fd)
    finally:
        os.close(fd)
    assert report.passed, report.model_dump()
    assert str(folder) in report.checks[0].detail and "/proc/self/fd" not in str(report.model_dump())
    # Between training and validation the folder is moved away and a copy put at its path: the copy is not read.
    folder.rename(folder.with_name("moved"))
    shutil.copytree(folder.with_name("moved"), folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"layout": {"model_dir": "merged", "adapter_dir": "."}}))
    stages.validate_stage(run.pk)
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "validate", "run_folder_changed")
    assert str(folder) in run.error_message and run.validation in ({}, None)


# --- the adapter archive is bounded ------------------------------------------------------------------------------


def lora_run(team) -> TrainingRun:
    project = TrainingProject.objects.create(
        owner=team["alice"], **fields(team["root"], "test-org/tiny-llama", name="lora", method="lora")
    )
    run = run_of(project, team["alice"], status=RunStatus.SUCCEEDED)
    os.close(create_run_folder(run))  # made and recorded as its train stage does
    folder = Path(run.run_folder)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    (folder / MANIFEST_NAME).write_text('{"format": 1}')
    return run


def refusal(run: TrainingRun) -> str:
    with pytest.raises(AdapterUnavailable) as refused:
        adapter_archive(run)
    assert refused.value.problem.code == "adapter_file_refused" and refused.value.status == 422
    return refused.value.problem.message


def test_the_adapter_archive_refuses_a_sparse_file_naming_it(team):
    run = lora_run(team)
    with open(Path(run.run_folder) / "tokenizer.json", "wb") as sparse:
        sparse.truncate(6 * 1024**3)  # 6 GiB long, nothing on disk: gigabytes of zeros to stream
    message = refusal(run)
    assert "tokenizer.json is a sparse file" in message and run.run_folder in message


@pytest.mark.parametrize("hole_at", ["end", "middle", "start"])
def test_the_adapter_archive_refuses_a_file_with_any_hole_naming_it(team, hole_at):
    """Half of the file written, half a hole: as many bytes on disk as half its length, which a count of blocks
    alone lets through. The bytes are random, so the file system cannot leave out a block of zeros itself."""
    run = lora_run(team)
    half = 2 * 1024**2
    path = Path(run.run_folder) / "tokenizer.json"
    with open(path, "wb") as holed:
        if hole_at == "end":
            holed.write(os.urandom(half))
            holed.truncate(2 * half)
        elif hole_at == "middle":
            holed.write(os.urandom(half // 2))
            holed.seek(half + half // 2)
            holed.write(os.urandom(half // 2))
        else:
            holed.seek(half)
            holed.write(os.urandom(half))
    assert path.stat().st_size == 2 * half and path.stat().st_blocks * 512 >= half
    hole = {"end": half, "middle": half // 2, "start": 0}[hole_at]
    message = refusal(run)
    assert f"tokenizer.json is a sparse file ({2 * half} bytes long, with a hole at byte {hole}" in message
    assert run.run_folder in message
    path.write_bytes(os.urandom(2 * half))  # the same length written in full goes
    assert adapter_archive(run).filename == f"run-{run.pk}-adapter.tar.gz"


def test_the_adapter_archive_refuses_a_fifo_naming_it(team):
    run = lora_run(team)
    os.mkfifo(Path(run.run_folder) / "special_tokens_map.json")
    assert "special_tokens_map.json is not a regular file" in refusal(run)


def test_the_adapter_archive_refuses_a_file_past_the_size_limit(team, settings, tiny_llama_dir):
    run = lora_run(team)
    settings.MTM_ADAPTER_ARCHIVE_MAX_BYTES = 200_000
    assert "adapter_model.safetensors is 300000 bytes, larger than this run could have written" in refusal(run)
    settings.MTM_ADAPTER_ARCHIVE_MAX_BYTES = 8 * 1024**3
    TrainingRun.objects.filter(pk=run.pk).update(resolved_path=str(tiny_llama_dir))
    run.refresh_from_db()
    weights = sum(p.stat().st_size for p in tiny_llama_dir.glob("*.safetensors"))
    big = Path(run.run_folder) / "tokenizer.json"
    big.write_bytes(b"x" * (4 * weights + 64 * 1024**2 + 1))  # more than an adapter of this base could be
    assert "tokenizer.json is" in refusal(run)
    big.unlink()
    assert adapter_archive(run).filename == f"run-{run.pk}-adapter.tar.gz"


# --- a resume reads only its source run's own folder --------------------------------------------------------------


@pytest.mark.parametrize("swap", ["link", "copy"])
def test_a_resume_whose_source_folder_was_swapped_reads_nothing(team, tiny_llama_in_cache, tmp_path, swap):
    name, snapshot = tiny_llama_in_cache
    project = create_project(actor=as_(team["mallory"]), data=fields(team["root"], name))
    source = run_of(project, team["mallory"], status=RunStatus.CANCELLED, snapshot=snapshot)
    os.close(create_run_folder(source))  # as its train stage made it
    checkpoint = Path(source.run_folder) / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    planted = tmp_path / "planted"
    (planted / "checkpoint-2").mkdir(parents=True)
    (planted / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2, "PLANTED": true}')
    resumed = run_of(project, team["mallory"], snapshot=snapshot)
    copy_dataset_as_resolve_does(resumed)
    TrainingRun.objects.filter(pk=resumed.pk).update(resume=True, resume_source=source, resumed_from=str(checkpoint))
    Path(source.run_folder).rename(tmp_path / "moved")
    if swap == "link":
        Path(source.run_folder).symlink_to(planted, target_is_directory=True)
    else:
        shutil.copytree(planted, source.run_folder)
    assert stages.train_stage(resumed.pk) is False
    resumed.refresh_from_db()
    assert (resumed.status, resumed.stage_failed) == (RunStatus.FAILED, "train")
    assert resumed.error_code == "resume_checkpoint_changed" and str(checkpoint) in resumed.error_message
    assert "PLANTED" not in resumed.log_tail and not (Path(resumed.run_folder) / MANIFEST_NAME).exists()
