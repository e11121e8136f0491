"""DPO projects end to end: a real worker on the real Redis broker, TRL's DPOTrainer in the real trainer child on the
CPU, the tiny Llama in a temp HF cache, then the run page and the API as a member reads them. Nothing of ours is
mocked; steps are kept to a handful."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User

from projects.datasets.samples import sample_pairs
from projects.models import RunStatus, TrainingProject
from projects.runs.columns import DPO_SERIES
from projects.runs.state_machine import CancelOutcome
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, cancel, start, wait_for_end, write_jsonl

pytestmark = pytest.mark.slow

DPO = {**FAST_HYPERPARAMETERS, "objective": "dpo", "max_steps": 4, "preference_pairs": 4, "max_seq_length": 48}


@pytest.fixture
def portal(portal_roots, transactional_db):
    return {"user": User.objects.create_user("dana", password="x"), "root": portal_roots}


def dpo_project(portal, model_name, name, hyper=None, method="lora"):
    root = portal["root"]
    return TrainingProject.objects.create(
        name=name,
        owner=portal["user"],
        model_name=model_name,
        dataset_path=str(write_jsonl(root / "datasets" / f"{name}.jsonl", sample_pairs(20))),
        dataset_format="preference",
        output_directory=str(root / "outputs" / name),
        method=method,
        hyperparameters={**DPO, **(hyper or {})},
    )


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


def test_a_dpo_run_cancels_to_a_checkpoint_and_a_resume_finishes_it(portal, tiny_llama_in_cache, celery_worker):
    project = dpo_project(
        portal, tiny_llama_in_cache[0], "prefs-cancel", {"max_steps": 400, "save_steps": 1000, "learning_rate": 0.001}
    )
    run = start(project, portal["user"])
    wait_for_end(run.pk, until=lambda r: (r.progress or {}).get("step", 0) >= 2)
    run.refresh_from_db()
    assert cancel(run, portal["user"]) is CancelOutcome.REQUESTED
    run = wait_for_end(run.pk)
    assert run.status == RunStatus.CANCELLED, (run.error_message, run.log_tail[-2000:])
    stopped_at = int(run.last_checkpoint.rsplit("-", 1)[1])

    project.hyperparameters = {**project.hyperparameters, "max_steps": stopped_at + 2}
    project.save()
    resumed = wait_for_end(start(project, portal["user"], resume=True).pk)
    assert resumed.status == RunStatus.SUCCEEDED, (resumed.error_message, resumed.log_tail[-3000:])
    assert resumed.resumed_from.endswith(f"checkpoint-{stopped_at}")
    assert max(m["step"] for m in resumed.metrics) == stopped_at + 2
    assert all("reward_margin" in m for m in resumed.metrics if m["step"] > stopped_at)


def test_an_sft_file_in_a_dpo_run_fails_at_resolve_naming_the_mismatch(portal, tiny_llama_in_cache, celery_worker):
    project = dpo_project(portal, tiny_llama_in_cache[0], "prefs-wrong")
    write_jsonl(Path(project.dataset_path), [{"prompt": "Say hi:", "completion": " hi"}] * 8)  # replaced after saving
    run = wait_for_end(start(project, portal["user"]).pk)
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "resolve", "dataset_not_pairs")
    assert run.metrics == []
