"""Uploads stored while uploads were written with the umask's modes (files 0644, folders 0755) get the documented
private modes (mtm.shared.file_modes: PRIVATE_FILE_MODE, PRIVATE_DIR_MODE) from the migration that runs at the
next start (`migrate`). It narrows only the upload folders and the files in them: nothing through a link, no file
with another name (a hard link) elsewhere, nothing that is not a regular file, nothing outside the uploads folder.

Real uploads stored through receive_upload, real links, hard links and a FIFO; the migration's own function."""

from __future__ import annotations

import importlib
import io
import os
import stat
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from mtm.audit import Actor
from mtm.shared.file_modes import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from projects.datasets import uploads_root
from projects.datasets.uploads import receive_upload
from tests.test_owned_paths import QA_BYTES

pytestmark = pytest.mark.django_db

MIGRATION = "0011_private_upload_modes"


def narrow_upload_modes() -> None:
    importlib.import_module(f"projects.migrations.{MIGRATION}").narrow_upload_modes(django_apps, None)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def legacy_upload(user, name: str = "qa.jsonl") -> Path:
    """An upload as the portal stored one before it wrote them private: the folder 0755, the file 0644."""
    stored = Path(receive_upload(Actor.command_line(user), io.BytesIO(QA_BYTES), name))
    os.chmod(stored.parent, 0o755)
    os.chmod(stored, 0o644)
    return stored


def test_the_migration_is_in_the_plan():
    executor = MigrationExecutor(connection)
    assert ("projects", MIGRATION) in executor.loader.graph.nodes


def test_old_uploads_get_the_documented_modes(team):
    first, second = legacy_upload(team["alice"]), legacy_upload(team["mallory"], "other.csv")
    root_mode = mode(uploads_root())
    narrow_upload_modes()
    for stored in (first, second):
        assert (mode(stored.parent), mode(stored)) == (PRIVATE_DIR_MODE, PRIVATE_FILE_MODE), stored
        assert stored.read_bytes() == QA_BYTES  # still the portal's to read
    assert mode(uploads_root()) == root_mode  # the uploads folder itself is not an upload
    narrow_upload_modes()  # again: nothing left to do, nothing fails
    assert (mode(first.parent), mode(first)) == (PRIVATE_DIR_MODE, PRIVATE_FILE_MODE)


def test_nothing_is_narrowed_through_a_link_or_outside_the_uploads_folder(team, tmp_path):
    stored = legacy_upload(team["alice"])
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    os.chmod(outside, 0o755)
    theirs = outside / "theirs.jsonl"
    theirs.write_bytes(QA_BYTES)
    os.chmod(theirs, 0o644)
    hard = outside / "hard.jsonl"
    hard.write_bytes(QA_BYTES)
    os.chmod(hard, 0o644)
    (uploads_root() / "linked-folder").symlink_to(outside)  # a link where an upload folder would be
    (stored.parent / "linked.jsonl").symlink_to(theirs)  # a link beside an upload's file
    os.link(hard, stored.parent / "hard.jsonl")  # another name of a file outside
    os.mkfifo(stored.parent / "fifo.jsonl", 0o644)  # opened, it would block a reader
    os.chmod(stored.parent / "fifo.jsonl", 0o644)
    narrow_upload_modes()
    assert (mode(stored.parent), mode(stored)) == (PRIVATE_DIR_MODE, PRIVATE_FILE_MODE)
    assert (mode(outside), mode(theirs), mode(hard)) == (0o755, 0o644, 0o644)
    assert mode(stored.parent / "fifo.jsonl") == 0o644


def test_without_an_uploads_folder_there_is_nothing_to_do(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "no-media"
    narrow_upload_modes()
    assert not (tmp_path / "no-media").exists()
