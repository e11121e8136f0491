"""DPO projects end to end: a real worker on the real Redis broker, TRL's DPOTrainer in the real trainer child on the
CPU, the tiny Llama in a temp HF cache, then the run page and the API as a member reads them. Nothing of ours is
mocked; steps are kept to a handful. test_dpo_pipeline_resume.py cancels and resumes such a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from projects.datasets.samples import sample_pairs
from projects.models import RunStatus
from projects.runs.columns import DPO_SERIES
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.dpo_helpers import dpo_project
from tests.pipeline_helpers import start, wait_for_end, write_jsonl

pytestmark = pytest.mark.slow


def test_a_dpo_project_trains_validates_with_the_preference_check_and_shows_its_curves(
    portal, tiny_llama_in_cache, celery_worker, client
):
    project = dpo_project(portal, tiny_llama_in_cache[0], "prefs")
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    assert run.config["held_out_pairs"] == 4 and not run.config["held_out_row"]
    assert [m["step"] for m in run.metrics] == [1, 2, 3, 4]
    assert all(set(DPO_SERIES) <= set(point) for point in run.metrics)

    checks = {c["name"]: c for c in run.validation["checks"]}
    assert list(checks) == ["files", "json", "load", "inference", "preference"]
    assert all(check["passed"] for check in checks.values()), checks
    assert "On 4 held-out pairs the model prefers the chosen answer" in checks["preference"]["detail"]
    preference = run.validation["preference"]
    assert preference["pairs"] == 4 and {"before", "after", "margin_before", "margin_after"} <= set(preference)
    assert run.validation["prompt"] == sample_pairs(20)[-1]["prompt"]  # the last held-out pair asks

    html = secure_client(portal["user"]).get(f"/projects/runs/{run.pk}/").content.decode()
    for name in ("Reward margin", "Reward accuracy", "Chosen reward", "Rejected reward"):
        assert f'aria-label="{name} from ' in html, name
    assert '<table class="table compact preference-result">' in html and "Preference check (DPO)" in html
    assert "Before (base model)" in html and "After training" in html

    _, token = make_user_token("reader", staff=True)
    body = call(client, "get", f"/runs/{run.pk}", token=token).json()
    assert body["metrics"] == run.metrics and body["metrics"][0]["reward_accuracy"] is not None
    assert body["validation"]["preference"]["pairs"] == 4


def test_an_sft_file_in_a_dpo_run_fails_at_resolve_naming_the_mismatch(portal, tiny_llama_in_cache, celery_worker):
    project = dpo_project(portal, tiny_llama_in_cache[0], "prefs-wrong")
    write_jsonl(Path(project.dataset_path), [{"prompt": "Say hi:", "completion": " hi"}] * 8)  # replaced after saving
    run = wait_for_end(start(project, portal["user"]).pk)
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "resolve", "dataset_not_pairs")
    assert run.metrics == []
