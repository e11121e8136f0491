"""Runs are records: each run has a folder of its own, keeps the settings it started with, shows its artifacts and
says when they are gone, and resumes only from a checkpoint of a run the member picked. Runs are started through
the service as a page or the API would; without a worker they stay queued, and their end is written on the row."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from mtm.audit import Actor, Channel
from mtm.models import ApiToken
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.charts.loss import loss_chart_svg
from projects.runs.records import history_before_resume
from projects.runs.services import RunRefused
from projects.services import create_project, update_project
from tests.api_client import call
from tests.clients import secure_client
from tests.pipeline_helpers import start

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("alice", password="alice-pass-1234")


@pytest.fixture
def project(portal_roots, owner, tiny_llama_in_cache) -> TrainingProject:
    data = {
        "name": "demo",
        "model_name": tiny_llama_in_cache[0],
        "dataset_path": str(portal_roots / "datasets" / "qa.jsonl"),
        "output_directory": str(portal_roots / "outputs" / "demo"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 16, "learning_rate": 0.001},
        "validation_prompt": "Line one\nLine two",
    }
    return create_project(data, actor=Actor(owner, Channel.CLI))


def ended(run: TrainingRun, status: RunStatus = RunStatus.SUCCEEDED, **fields) -> TrainingRun:
    TrainingRun.objects.filter(pk=run.pk).update(status=status, **fields)
    run.refresh_from_db()
    return run


def checkpoint_in(run: TrainingRun, step: int, state: dict | None = None) -> Path:
    folder = Path(run.run_folder) / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps(state if state is not None else {"global_step": step}))
    return folder


def api(owner: User, method: str, path: str, body=None):
    return call(secure_client(), method, path, body, ApiToken.issue(owner, "tests")[1])


def page(owner: User, path: str) -> str:
    """The page's HTML, its per-request CSRF tokens blanked so two renders of an unchanged page are equal."""
    response = secure_client(owner).get(path)
    assert response.status_code == 200
    html = response.content.decode()
    html = re.sub(r'("x-csrftoken": ")[^"]+', r"\1", html)
    return re.sub(r'(name="csrfmiddlewaretoken" value=")[^"]+', r"\1", html)


# --- a folder per run -----------------------------------------------------------------------------------------


def test_each_run_writes_in_a_folder_of_its_own_inside_the_output_directory(project, owner):
    first = ended(start(project, owner))
    second = start(project, owner)
    output = os.path.realpath(project.output_directory)
    assert first.run_folder == os.path.join(output, f"run-{first.pk}")
    assert second.run_folder == os.path.join(output, f"run-{second.pk}")
    body = api(owner, "get", f"/runs/{second.pk}").json()
    assert body["run_folder"] == body["output_directory"] == second.run_folder
    assert body["artifacts"][0] == {
        "name": "folder",
        "label": "Run folder",
        "path": second.run_folder,
        "exists": False,
    }


def test_a_succeeded_run_whose_files_are_gone_says_missing(project, owner):
    run = start(project, owner)
    folder = Path(run.run_folder)
    folder.mkdir(parents=True)
    (folder / "merged").mkdir()  # LoRA merged after training (the default)
    for name in ("adapter_config.json", "mtm_manifest.json"):
        (folder / name).write_text("{}")
    run = ended(run, last_checkpoint=str(checkpoint_in(run, 4)))
    body = api(owner, "get", f"/runs/{run.pk}").json()
    assert body["files_missing"] is False and all(a["exists"] for a in body["artifacts"])
    assert [a["name"] for a in body["artifacts"]] == ["folder", "adapter", "model", "manifest", "checkpoint"]
    html = page(owner, f"/projects/runs/{run.pk}/")
    assert "Files missing" not in html and ">missing</span>" not in html

    shutil.rmtree(folder)
    body = api(owner, "get", f"/runs/{run.pk}").json()
    assert body["status"] == "succeeded" and body["files_missing"] is True
    assert not any(a["exists"] for a in body["artifacts"])
    html = page(owner, f"/projects/runs/{run.pk}/")
    assert "Files missing:" in html and html.count('<span class="badge badge-error">missing</span>') == 5
    assert "files missing</span>" in page(owner, f"/projects/{project.pk}/")


def test_a_queued_runs_folder_is_not_yet_written_not_missing(project, owner):
    run = start(project, owner)
    html = page(owner, f"/projects/runs/{run.pk}/")
    assert '<span class="badge badge-muted">not written yet</span>' in html and ">missing</span>" not in html


# --- a run keeps what it trained with --------------------------------------------------------------------------


def test_editing_the_project_never_changes_what_a_run_shows(project, owner, tiny_llama_in_cache, copy_of_tiny_llama):
    run = ended(start(project, owner), resolved_revision="abc123", resolved_path="/cache/snapshot")
    before = page(owner, f"/projects/runs/{run.pk}/")
    api_before = api(owner, "get", f"/runs/{run.pk}").json()["config"]
    assert api_before["model_name"] == tiny_llama_in_cache[0] and api_before["method"] == "lora"
    assert api_before["hyperparameters"]["learning_rate"] == 0.001 and api_before["dataset_sha256"]

    changes = {"method": "full", "hyperparameters": {"learning_rate": 0.005}, "validation_prompt": "Other"}
    update_project(project, changes, actor=Actor(owner, Channel.CLI))
    project.refresh_from_db()
    assert project.method == "full"

    after = page(owner, f"/projects/runs/{run.pk}/")
    assert after == before
    assert "LoRA of <code>" in after and "Full fine-tune" not in after
    assert '<pre class="prompt">Line one\nLine two</pre>' in after  # the prompt keeps its newline
    assert api(owner, "get", f"/runs/{run.pk}").json()["config"] == api_before


def test_the_next_run_lists_only_what_changed_since_the_previous_one(project, owner):
    first = ended(start(project, owner))
    assert "This is the project's first run." in page(owner, f"/projects/runs/{first.pk}/")
    update_project(project, {"hyperparameters": {"learning_rate": 0.005}}, actor=Actor(owner, Channel.CLI))
    second = ended(start(project, owner))
    html = page(owner, f"/projects/runs/{second.pk}/")
    changes = html[html.index('<table class="table compact changes">') :]
    changes = changes[: changes.index("</table>")]
    assert changes.count('<th scope="row">') == 1
    assert "Learning rate" in changes and "0.001" in changes and "0.005" in changes
    third = ended(start(project, owner))
    assert f"Nothing: the same settings as run #{second.pk}." in page(owner, f"/projects/runs/{third.pk}/")


def test_a_run_trains_what_it_was_started_with_not_the_edited_project(project, owner, tiny_llama_in_cache):
    from projects.runs.stages import resolve_stage

    run = start(project, owner)
    # The project is pointed at a model that is not in the cache after Start, before the worker resolves.
    TrainingProject.objects.filter(pk=project.pk).update(model_name="nobody/not-in-the-cache")
    assert resolve_stage(run.pk) is True
    run.refresh_from_db()
    assert run.status == RunStatus.RESOLVING and run.resolved_path == str(tiny_llama_in_cache[1])


# --- resume ----------------------------------------------------------------------------------------------------


def test_resume_is_offered_only_from_the_runs_own_checkpoint(project, owner):
    stopped = ended(start(project, owner), RunStatus.CANCELLED)
    checkpoint = checkpoint_in(stopped, 4)
    later = ended(start(project, owner), RunStatus.FAILED)  # no checkpoint of its own
    assert "Resume from" not in page(owner, f"/projects/runs/{later.pk}/")
    assert "resume from" not in page(owner, f"/projects/{project.pk}/")  # the latest run has none
    html = page(owner, f"/projects/runs/{stopped.pk}/")
    assert "Resume from checkpoint-4" in html and f'name="resume_from" value="{stopped.pk}"' in html

    response = secure_client(owner).post(f"/projects/{project.pk}/start/", {"resume": "1", "resume_from": stopped.pk})
    resumed = TrainingRun.objects.order_by("-pk").first()
    assert response.status_code == 302 and response["Location"] == f"/projects/runs/{resumed.pk}/"
    assert resumed.resume_source_id == stopped.pk and resumed.resumed_from == str(checkpoint)
    assert resumed.run_folder.endswith(f"/run-{resumed.pk}")  # it writes in its own folder
    assert f'resuming run <a href="/projects/runs/{stopped.pk}/">#{stopped.pk}</a> at step 4' in page(
        owner, f"/projects/runs/{resumed.pk}/"
    )


def test_resume_of_the_latest_run_without_a_checkpoint_is_refused_naming_it(project, owner):
    stopped = ended(start(project, owner), RunStatus.CANCELLED)
    checkpoint_in(stopped, 4)
    later = ended(start(project, owner), RunStatus.FAILED)
    body = api(owner, "post", f"/projects/{project.pk}/runs", {"resume": True})
    assert body.status_code == 422
    [error] = body.json()["errors"]
    assert error["code"] == "no_checkpoint" and f"run {later.pk}" in error["message"]
    assert "pick another run" in error["hint"]
    picked = api(owner, "post", f"/projects/{project.pk}/runs", {"resume_from_run": stopped.pk})
    assert picked.status_code == 201 and picked.json()["resume_from_run"] == stopped.pk


def test_resume_from_a_run_of_another_project_is_refused(project, owner, portal_roots):
    other = TrainingProject.objects.create(
        name="other",
        owner=owner,
        model_name=project.model_name,
        dataset_path=project.dataset_path,
        output_directory=str(portal_roots / "outputs" / "other"),
        hyperparameters={"max_steps": 5},
    )
    foreign = ended(start(other, owner), RunStatus.CANCELLED)
    checkpoint_in(foreign, 2)
    body = api(owner, "post", f"/projects/{project.pk}/runs", {"resume_from_run": foreign.pk})
    assert body.status_code == 422 and body.json()["errors"][0]["code"] == "resume_other_project"
    assert not project.runs.exists()


def test_a_resume_with_nothing_left_to_train_is_refused_with_the_reason(project, owner):
    done = ended(start(project, owner), RunStatus.CANCELLED)
    checkpoint_in(done, 5)  # max_steps is 5
    with pytest.raises(RunRefused) as refused:
        start(project, owner, resume=True)
    problem = refused.value.problem
    assert problem.code == "nothing_to_resume"
    assert problem.message == "Nothing left to train: checkpoint-5 is already at step 5, and max_steps is 5."
    assert "Raise max_steps above 5" in problem.hint
    update_project(project, {"hyperparameters": {"max_steps": 0, "epochs": 1}}, actor=Actor(owner, Channel.CLI))
    shutil.rmtree(Path(done.run_folder) / "checkpoint-5")
    checkpoint_in(done, 3, {"global_step": 3, "epoch": 1.0})
    with pytest.raises(RunRefused) as refused:
        start(project, owner, resume=True)
    assert "has already trained 1 epochs, and epochs is 1" in refused.value.problem.message
    update_project(project, {"hyperparameters": {"max_steps": 8}}, actor=Actor(owner, Channel.CLI))
    assert start(project, owner, resume=True).resume_source_id == done.pk


def test_a_resumed_run_inherits_the_history_up_to_its_checkpoint():
    source = TrainingRun(metrics=[{"step": s, "loss": 5.0 - s / 10} for s in range(1, 9)])
    resumed = TrainingRun(resume=True, resume_source=source, resumed_from="/out/run-1/checkpoint-4")
    assert [p["step"] for p in history_before_resume(resumed)] == [1, 2, 3, 4]
    assert history_before_resume(TrainingRun(resume=False)) == []


def test_the_loss_chart_marks_where_a_run_resumed():
    metrics = [{"step": s, "loss": 5.0 - s / 10} for s in range(1, 9)]
    svg = loss_chart_svg(metrics, resumed_at=4)
    assert 'class="resume-mark"' in svg and "resumed at step 4" in svg
    assert "resume-mark" not in loss_chart_svg(metrics)


# --- stale banners ----------------------------------------------------------------------------------------------


def test_a_run_stopped_part_way_shows_no_eta_done(project, owner):
    progress = {"step": 7, "total_steps": 10, "eta_seconds": 3.0}
    failed = ended(start(project, owner), RunStatus.FAILED, progress=progress, cancel_requested=True)
    html = page(owner, f"/projects/runs/{failed.pk}/")
    assert "ETA done" not in html and "ETA —" in html and "Cancel requested" not in html
    succeeded = ended(start(project, owner), progress={**progress, "step": 10})
    assert "ETA done" in page(owner, f"/projects/runs/{succeeded.pk}/")


# --- a held-out validation prompt -------------------------------------------------------------------------------


def test_the_held_out_row_is_not_trained_on(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    from projects.trainer.run import build_training_data
    from projects.trainer.spec import TrainerSpec, read_spec, write_spec
    from tests.pipeline_helpers import write_jsonl

    rows = [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(12)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    for hold_out, trained in ((False, 12), (True, 11)):
        spec = read_spec(
            write_spec(
                TrainerSpec(
                    model_path=tiny_llama_dir,
                    model_name="org/m",
                    dataset_path=data,
                    output_dir=tmp_path / "out",
                    hyperparameters={"max_seq_length": 32},
                    hold_out_last_row=hold_out,
                ),
                tmp_path / "spec.json",
            )
        )
        examples, info = build_training_data(spec, tokenizer)
        assert (len(examples), info["dataset_rows"], info["held_out_rows"]) == (trained, 12, int(hold_out))
        texts = [tokenizer.decode(example["input_ids"]) for example in examples]
        assert any("Question 11?" in text for text in texts) is not hold_out


def test_the_loss_charts_tick_labels_are_distinct():
    from projects.runs.charts.loss import build_loss_chart

    metrics = [{"step": s, "loss": 2.0 + s * 0.0001} for s in range(1, 13)]
    chart = build_loss_chart(metrics)
    labels = [tick.label for tick in chart.y_ticks]
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    steps = build_loss_chart([{"step": s, "loss": 1.0 / s} for s in range(1000, 3001, 100)]).x_ticks
    assert [tick.label for tick in steps][:2] == ["1,000", "1,500"]


def test_the_max_steps_help_says_it_overrides_epochs():
    from projects.hyperparameters import HYPERPARAMETERS

    assert "overrides epochs" in HYPERPARAMETERS["max_steps"].help


def test_a_projects_run_folders_are_its_own_and_nobody_elses(project, owner):
    from projects.ownership import OWNED, output_dir_conflicts

    first = ended(start(project, owner))
    folder = Path(first.run_folder)
    folder.mkdir(parents=True)
    (folder / "mtm_manifest.json").write_text("{}")
    (folder / ".mtm-run").write_text(f"{first.pk}\n")
    assert output_dir_conflicts(project.output_directory, owner, project) == []
    assert output_dir_conflicts(str(folder), owner, project) == []
    assert start(project, owner).run_folder != first.run_folder  # its own folders never block it
    bob = User.objects.create_user("bob")
    for path in (folder, folder / "inside"):
        problems = output_dir_conflicts(str(path), bob, None)
        assert [p.code for p in problems] == [OWNED], path
        assert "project 'demo' (owner alice)" in problems[0].message


def test_a_sample_output_with_nul_and_lone_surrogates_is_stored(project, owner):
    """A tiny model may answer a NUL character: PostgreSQL refuses it in a JSON column, so validation once failed
    with an internal error after a good training run."""
    from projects.runs.columns import ValidationReport

    run = start(project, owner)
    report = ValidationReport(sample_output="a\x00b\ud800c", prompt="say\x00", checks=[{"name": "inference"}])
    TrainingRun.objects.filter(pk=run.pk).update(validation=report.model_dump())
    run.refresh_from_db()
    assert (run.validation["sample_output"], run.validation["prompt"]) == ("a\u2400b\ufffdc", "say\u2400")
    assert "a\u2400b" in page(owner, f"/projects/runs/{run.pk}/")
