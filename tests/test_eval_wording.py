"""The run and compare pages never contradict themselves about the eval set: a run without one says "none during
training", and the base-vs-fine-tuned loss its validation measured on the dataset's held-out last row is named the
held-out validation row (not an eval set); a run with an eval set keeps "eval loss". Runs are rows as the worker
leaves them, read through the real views."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.config import RunConfig
from tests.clients import secure_client

pytestmark = pytest.mark.django_db
VALIDATION_ROW_LOSS = "Loss on the held-out validation row (not an eval set)"


def finished_run(roots, owner: User, name: str, eval_fraction: float, eval_rows: int) -> TrainingRun:
    hyper = {"eval_fraction": eval_fraction, "eval_prompts": 1}
    project = TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name="test-org/tiny-llama",
        dataset_path=str(roots / "datasets" / "qa.jsonl"),
        output_directory=str(roots / "outputs" / name),
        hyperparameters=hyper,
    )
    config = RunConfig.of_project(project)
    config.hyperparameters.update(hyper)
    config.dataset_rows = 40
    config.held_out_row = True
    metrics = [{"step": step, "loss": 6.0 - step / 100, "learning_rate": 1e-4} for step in (1, 2)]
    if eval_fraction:
        metrics.append({"step": 2, "eval_loss": 5.5, "perplexity": 244.7})
    started = timezone.now() - timedelta(minutes=2)
    before_after = {"eval_rows": eval_rows, "base_eval_loss": 6.0155, "tuned_eval_loss": 6.0139, "pairs": []}
    return TrainingRun.objects.create(
        project=project,
        started_by=owner,
        status=RunStatus.SUCCEEDED,
        config=config.model_dump(),
        metrics=metrics,
        summary={"global_step": 2, "final_loss": 5.98, "result_step": 2},
        validation={
            "passed": True,
            "checks": [{"name": "files", "passed": True, "detail": "ok"}],
            "before_after": before_after,
        },
        started_at=started,
        finished_at=started + timedelta(seconds=60),
    )


@pytest.fixture
def owner(portal_roots) -> User:
    return User.objects.create_user("newcomer")


def text(response) -> str:
    assert response.status_code == 200
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def test_a_run_without_an_eval_set_names_the_validation_row_as_such(owner, portal_roots):
    run = finished_run(portal_roots, owner, "plain", 0.0, 1)
    page = text(secure_client(owner).get(f"/projects/runs/{run.pk}/"))
    assert "Eval set none during training (no eval file, eval fraction 0)" in page
    assert f"{VALIDATION_ROW_LOSS}: base 6.0155 , fine-tuned 6.0139" in page
    assert "Eval loss on 1 held-out row" not in page


def test_a_run_with_an_eval_set_keeps_eval_loss(owner, portal_roots):
    run = finished_run(portal_roots, owner, "split", 0.1, 4)
    page = text(secure_client(owner).get(f"/projects/runs/{run.pk}/"))
    assert "4 of 39 rows (10%), picked with seed" in page and "none during training" not in page
    assert "Eval loss on 4 rows of the eval set (held out of the dataset): base 6.0155" in page
    assert "validation row" not in page


def test_compare_says_which_loss_is_which(owner, portal_roots):
    plain = finished_run(portal_roots, owner, "plain", 0.0, 1)
    split = finished_run(portal_roots, owner, "split", 0.1, 4)
    page = text(secure_client(owner).get(f"/projects/runs/compare/?runs={plain.pk},{split.pk}"))
    eval_row = page.split("Eval loss (perplexity)")[1].split("Best eval loss")[0]
    assert "— (no eval set during training)" in eval_row and "5.5000" in eval_row
    validation = page.split("Validation", 1)[1]
    assert "loss on the held-out validation row (not an eval set): base 6.0155 → fine-tuned 6.0139" in validation
    assert "eval loss: base 6.0155 → fine-tuned 6.0139" in validation
