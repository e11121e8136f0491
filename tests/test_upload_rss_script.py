"""bench/upload_rss.py keeps working: a tiny run against its own gunicorn answers as expected and leaves nothing
behind. No memory or time figure is asserted; those belong in BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

from bench.upload_rss import write_dataset

pytestmark = pytest.mark.bench  # make test leaves the benchmark smoke tests out; -m bench runs them


@pytest.mark.slow
def test_upload_rss_script_runs_clean_and_leaves_nothing_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "bench.upload_rss", "--size-mb", "12", "--json"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["problems"] == []
    assert figures["dataset_bytes"] >= 12 * 1024 * 1024 and figures["idle_rss_mb"] > 0
    assert set(figures["steps"]) == {"upload", "check"}
    for step in figures["steps"].values():
        assert step["answer"] == "HTTP 200: at least 2000 rows"
    assert list(tmp_path.iterdir()) == []


def test_generated_dataset_is_json_lines_of_the_asked_size(tmp_path):
    size = write_dataset(tmp_path / "d.jsonl", 2)
    lines = (tmp_path / "d.jsonl").read_bytes().splitlines()
    assert size == (tmp_path / "d.jsonl").stat().st_size >= 2 * 1024 * 1024
    assert all(set(json.loads(line)) == {"prompt", "completion"} for line in lines)
