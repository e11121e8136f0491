"""Which tests the PostgreSQL pass runs (tests/conftest.py): those that use the database, except slow and browser
tests whose subject is not the database. Collected in a child pytest with a PostgreSQL URL; collecting opens no
connection, so no server is needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def collected(database_url: str | None, *files: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTEST_XDIST_WORKER")}
    if database_url:
        env["DATABASE_URL"] = database_url
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {line.strip() for line in result.stdout.splitlines() if "::" in line}


def test_the_postgresql_pass_keeps_database_tests_and_leaves_out_training_and_no_database_tests():
    files = (
        "tests/test_pipeline.py",
        "tests/test_pipeline_merge.py",
        "tests/test_liveness.py",
        "tests/test_compose.py",
    )
    everything = collected(None, *files)
    on_postgres = collected("postgres://nobody@127.0.0.1:1/none", *files)
    assert on_postgres < everything
    # fast and using the database
    assert "tests/test_liveness.py::test_stale_runs_fail_with_their_stage_and_fresh_ones_stay" in on_postgres
    # slow, but marked `database`: its subject is the rows a worker writes and reads
    assert "tests/test_liveness.py::test_beat_and_a_worker_reap_a_silent_run" in on_postgres
    assert "tests/test_pipeline.py::test_full_fine_tune_succeeds_and_is_proven_to_work" in on_postgres
    # fast, using no database
    assert (
        "tests/test_liveness.py::test_a_cancelled_trainer_that_will_not_stop_is_killed_and_the_outcome_says_it_was_after_a_cancel"
        in (everything - on_postgres)
    )
    # slow and about training: the SQLite pass has shown it
    lora = "tests/test_pipeline_merge.py::test_lora_with_merge"
    assert lora in everything and lora not in on_postgres
    # no database at all
    assert any(name.startswith("tests/test_compose.py::") for name in everything)
    assert not any(name.startswith("tests/test_compose.py::") for name in on_postgres)
