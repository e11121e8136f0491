"""bench/load.py keeps working: a tiny run against its own gunicorn gives zero errors and leaves nothing behind.

No timing is asserted; the figures themselves belong in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

from bench.load import BASELINE_LABEL, expect_json, expect_page

pytestmark = pytest.mark.bench  # make test leaves the benchmark smoke tests out; -m bench runs them

MIX_LABELS = {
    "POST validate-model (present)",
    "POST validate-model (missing)",
    "POST validate-model (invalid name)",
    "GET models/available",
    "GET /models/ (page)",
    "GET /models/<name>/ (page)",
}


@pytest.mark.slow
def test_load_script_runs_clean_and_leaves_nothing_behind(tmp_path):
    # Its own SQLite database whatever the suite runs on, and its temporary folder inside tmp_path to look at after.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "bench.load", "--clients", "3", "--duration", "2", "--repos", "20", "--json"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["errors"] == 0, figures["error_kinds"]
    assert figures["requests"]["mix"] > 0 and figures["requests"]["baseline"] > 0
    assert set(figures["endpoints"]) == MIX_LABELS | {BASELINE_LABEL}
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in figures["endpoints"].values())
    assert figures["throughput_rps"]["mix"] > 0 and figures["ratio_mix_to_baseline"] > 0
    assert list(tmp_path.iterdir()) == []


def test_load_checks_count_wrong_answers_as_errors():
    present = expect_json(200, lambda d: d["valid"] is True)
    assert present(200, b'{"valid": true}') is None
    assert "HTTP 500" in present(500, b"Server Error")
    assert "unexpected body" in present(200, b'{"valid": false}')
    assert "unexpected body" in present(200, b"<html>not json</html>")
    invalid_name = expect_json(422, lambda d: d["errors"][0]["code"] == "invalid_model_name")
    assert "HTTP 200" in invalid_name(200, b'{"valid": false}')
    page = expect_page("org/model")
    assert page(200, b"<h1>org/model</h1>") is None
    assert "HTTP 302" in page(302, b"")  # sent to the login page: the session was lost
