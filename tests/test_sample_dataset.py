"""The sample dataset `make run` writes: under the first dataset root, valid, long enough for a held-out row."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from projects.datasets import inspect_dataset
from projects.datasets.samples import SAMPLE_FOLDER, SAMPLE_NAME

pytestmark = pytest.mark.django_db


def test_the_sample_dataset_is_written_once_and_trains(portal_roots, capsys):
    call_command("create_sample_dataset")
    path = portal_roots / "datasets" / SAMPLE_FOLDER / SAMPLE_NAME
    assert f"Sample dataset: written to {path}." in capsys.readouterr().out
    report = inspect_dataset(str(path), None, 64)
    assert report.valid and report.format == "prompt_completion" and report.rows >= 10, report.errors
    path.write_text('{"text": "edited by hand"}\n')
    call_command("create_sample_dataset")
    assert "is there already; left as it is" in capsys.readouterr().out
    assert path.read_text() == '{"text": "edited by hand"}\n'
