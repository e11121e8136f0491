"""Reads that come after the worker checked a run folder: a file swapped in between the check and the read (a link,
another name for a file elsewhere, a file the worker did not write renamed into place) is refused, never read. The
swap is made between the two calls, in the order the validate stage makes them.

The identity recorded for a run folder also holds on another host of a shared (NFS) folder: there the same folder
has another st_dev, and the same filesystem id and inode."""

# ruff: noqa: F811  (the fixtures imported from tests.test_publish are the tests' parameters)
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtm.shared.claims import Standing, identity_of, standing
from projects.runs import stages
from projects.runs.folder import RunFolderRefused, open_folder_as_made, open_run_folder
from projects.runs.paths import reopen_run_folder
from tests.test_publish import team  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

ROWS = [{"messages": [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "4"}]}]
PLANTED = "PLANTED {{ messages[0]['content'] }}"


def planted_template(root: Path) -> Path:
    """A chat template of the member's own, outside the run folder."""
    mine = root / "outputs" / "mallory-template.jinja"
    mine.write_text(PLANTED)
    return mine


def swap_in(folder: Path, mine: Path, how: str) -> None:
    target = folder / "chat_template.jinja"
    target.unlink()
    if how == "link":
        target.symlink_to(mine)
    elif how == "hard link":
        os.link(mine, target)
    else:  # a file the worker did not write, renamed into place
        if os.geteuid() != 0:
            pytest.skip("only root can give the planted file another owner")
        os.chown(mine, 65534, 65534)
        os.rename(mine, target)


def test_the_validation_prompt_is_read_through_the_checked_folder(team):
    run = team["run"]
    fd = reopen_run_folder(run)
    try:
        prompt = stages._validation_prompt(run, ROWS, fd)
    finally:
        os.close(fd)
    assert prompt == "<|user|>\nWhat is two plus two?<|end|>\n<|assistant|>\n"  # the run's own chat template


@pytest.mark.parametrize("how", ["link", "hard link", "foreign file"])
def test_a_tokenizer_file_swapped_after_the_check_is_not_read_for_the_validation_prompt(team, how):
    run = team["run"]
    mine = planted_template(team["root"])
    fd = reopen_run_folder(run)  # the validate stage's check: the folder the train stage created
    try:
        swap_in(Path(run.run_folder), mine, how)
        prompt = stages._validation_prompt(run, ROWS, fd)
    finally:
        os.close(fd)
    assert "PLANTED" not in prompt
    assert prompt == ""  # the default prompt: the folder holds a file the worker did not write


# --- identity across hosts ---------------------------------------------------------------------------------------


def as_recorded_on_another_host(folder: str) -> str:
    """The identity another NFS client records for `folder`: its own st_dev, the same filesystem id and inode."""
    info, disk = os.stat(folder), os.statvfs(folder)
    return f"{info.st_dev + 1}:{info.st_ino}:{disk.f_fsid:x}"


def test_a_run_folder_recorded_on_another_host_is_the_same_folder_here(team):
    run = team["run"]
    run.run_folder_identity = as_recorded_on_another_host(run.run_folder)
    os.close(open_run_folder(run))
    assert standing(run.run_folder, run.run_folder_identity)[0] is Standing.INTACT


def test_another_folder_recorded_on_another_host_is_still_refused(team, tmp_path):
    run = team["run"]
    other = tmp_path / "outputs" / "elsewhere"
    other.mkdir(parents=True)
    recorded = as_recorded_on_another_host(str(other))
    with pytest.raises(RunFolderRefused) as refused:
        open_folder_as_made(run.run_folder, recorded, run.pk)
    assert refused.value.problem.code == "run_folder_changed"
    assert standing(run.run_folder, recorded)[0] is Standing.REPLACED


def test_an_identity_recorded_without_a_filesystem_id_still_works(team, tmp_path):
    run = team["run"]
    info = os.stat(run.run_folder)
    run.run_folder_identity = f"{info.st_dev}:{info.st_ino}"  # rows recorded before the filesystem id was
    os.close(open_run_folder(run))
    assert standing(run.run_folder, run.run_folder_identity)[0] is Standing.INTACT
    run.run_folder_identity = f"{info.st_dev + 1}:{info.st_ino}"  # another device: another folder, as before
    with pytest.raises(RunFolderRefused):
        open_run_folder(run)
    assert identity_of(run.run_folder).count(":") == 2  # what is recorded now carries the filesystem id
