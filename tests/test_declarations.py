"""Each concept declared once: every hyperparameter's declaration reaches the form, the API schema, the project
page, the validation and the trainer with nothing else to update; run statuses drive badges and polling; a run's
JSON columns are written and read through one typed shape each."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils.html import escape
from pydantic import ValidationError

from mtm.audit import Actor
from projects.forms import ProjectForm
from projects.hyperparameters import GROUPS, HYPERPARAMETERS, Declared, Hyperparameters
from projects.models import ENDED_STATUSES, LIVE_STATUSES, RunStage, RunStatus, TrainingProject, TrainingRun
from projects.runs import stages
from projects.runs.columns import CHECK_LABELS, RunProgress, ValidationReport
from projects.runs.stages import _RunRecorder
from projects.runs.validation.checks import validate_output
from projects.services import create_project
from projects.trainer.events import format_event, parse_event
from projects.trainer.spec import TrainerSpec, read_spec, write_spec
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.pipeline_helpers import QA_ROWS, start, write_jsonl
from tests.test_owned_paths import fields

pytestmark = pytest.mark.django_db
DECLARED = list(HYPERPARAMETERS.values())
# Where each fieldset sits in the new-project form: the text that opens it and the one that closes it.
FIELDSETS = {
    "training": ("<h2>Training</h2>", '<details class="more"'),
    "checkpoints": ('<details class="more"', "</details>"),
    "lora": ('<fieldset class="lora-fields">', "</fieldset>"),
    "dpo": ('<fieldset class="dpo-fields">', "</fieldset>"),
}


def between(html: str, start: str, end: str) -> str:
    assert start in html, f"{start!r} not in the page"
    rest = html[html.index(start) :]
    assert end in rest, f"{end!r} not after {start!r}"
    return rest[: rest.index(end)]


def other_value(declared: Declared) -> Any:
    """A valid value that is not the default, chosen from the declaration."""
    if declared.kind == "bool":
        return not declared.default
    if declared.kind == "choice":
        return next(choice for choice in declared.choices if choice != declared.default)
    if declared.kind == "modules":
        return ["q_proj", "v_proj"]
    value = declared.high if declared.high != declared.default else declared.low
    return int(value) if declared.kind == "int" else float(value)


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("alice", password="alice-pass-1234")


def make_project(owner: User, method: str = "lora", output_directory: str = "/output/demo") -> TrainingProject:
    return TrainingProject.objects.create(
        name="demo",
        owner=owner,
        model_name="test-org/tiny-llama",
        dataset_path="/data/qa.jsonl",
        output_directory=output_directory,
        method=method,
    )


# --- hyperparameters --------------------------------------------------------------------------------------------


def test_the_declarations_cover_the_model_and_name_a_known_fieldset():
    assert list(HYPERPARAMETERS) == list(Hyperparameters.model_fields)
    assert {declared.group for declared in DECLARED} <= set(GROUPS) == set(FIELDSETS)
    assert all(declared.label and declared.label != declared.name for declared in DECLARED)


@pytest.mark.parametrize("declared", DECLARED, ids=lambda d: d.name)
def test_each_hyperparameter_has_its_box_label_and_help_in_its_fieldset(owner, declared):
    html = secure_client(owner).get("/projects/new/").content.decode()
    fieldset = between(html, *FIELDSETS[declared.group])
    assert f'id="id_{declared.name}"' in fieldset
    at = fieldset.index(f'id="id_{declared.name}"')
    box = fieldset[max(fieldset.rfind('<div class="field', 0, at), fieldset.rfind('<div class="check', 0, at)) :]
    box = box[: box.index("</div>")]
    assert escape(declared.label) in box
    if declared.help:
        assert escape(declared.help) in box
    if declared.kind in ("int", "float"):
        assert 'type="number"' in box
    if declared.kind == "bool":
        assert 'type="checkbox"' in box
    initial = ProjectForm.initial_for(None)[declared.name]
    assert initial == (", ".join(declared.default) if isinstance(declared.default, list) else declared.default)


def test_the_api_schema_is_the_declaration(client, db):
    _, token = make_user_token("reader")
    schema = call(client, "get", "/openapi.json", token=token).json()
    project = schema["components"]["schemas"]["ProjectOut"]["properties"]["hyperparameters"]
    component = schema["components"]["schemas"][project["$ref"].rsplit("/", 1)[1]]
    assert list(component["properties"]) == list(HYPERPARAMETERS)
    sent = schema["components"]["schemas"]["ProjectIn"]["properties"]["hyperparameters"]
    assert list(sent["properties"]) == list(HYPERPARAMETERS) and sent["additionalProperties"] is False
    for declared in DECLARED:
        prop = component["properties"][declared.name]
        assert prop["title"] == declared.label and prop["default"] == declared.default
        assert prop.get("description", "") == declared.help and prop["x-group"] == declared.group
        if declared.kind in ("int", "float"):
            assert prop["type"] == ("integer" if declared.kind == "int" else "number")
            low_key = "exclusiveMinimum" if declared.low_open else "minimum"
            assert (prop[low_key], prop["maximum"]) == (declared.low, declared.high)
        if declared.kind == "choice":
            assert prop["enum"] == list(declared.choices)
        if declared.kind == "bool":
            assert prop["type"] == "boolean"


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_project_page_labels_every_hyperparameter_that_applies(owner, method):
    project = make_project(owner, method)
    html = secure_client(owner).get(f"/projects/{project.pk}/").content.decode()
    table = between(html, '<table class="table compact hyperparameters">', "</table>")
    for declared in DECLARED:
        shown = f'<th scope="row">{escape(declared.label)}</th>' in table
        if declared.dpo_only:  # an SFT project's page leaves out the DPO settings
            assert not shown, declared.name
            continue
        assert shown == (method == "lora" or not declared.lora_only), declared.name


@pytest.mark.parametrize("declared", DECLARED, ids=lambda d: d.name)
def test_each_declared_bound_is_enforced_with_a_message_naming_it(declared):
    bad: list[Any] = ["not a value"] if declared.kind != "modules" else [[], "bad name!"]
    if declared.kind in ("int", "float"):
        step = 1 if declared.kind == "int" else 0.001
        bad += [declared.low if declared.low_open else declared.low - step, declared.high + step]
    for value in bad:
        values, problems = Hyperparameters.from_dict({declared.name: value})
        assert [p.code for p in problems] == ["invalid_hyperparameter"], value
        assert f"'{declared.name}'" in problems[0].message and declared.allowed() in problems[0].message
        assert declared.name in problems[0].hint
        assert getattr(values, declared.name) == declared.default
        with pytest.raises(ValidationError):  # the model itself refuses it too: one declaration, two uses
            Hyperparameters(**{declared.name: value})
    good = other_value(declared)
    values, problems = Hyperparameters.from_dict({declared.name: good})
    assert problems == [] and getattr(values, declared.name) == good


@pytest.mark.parametrize("declared", DECLARED, ids=lambda d: d.name)
def test_each_hyperparameter_reaches_the_trainer(tmp_path, declared):
    (tmp_path / "model").mkdir()
    (tmp_path / "data.jsonl").write_text('{"text": "hi"}\n')
    value = other_value(declared)
    spec = TrainerSpec(
        model_path=tmp_path / "model",
        model_name="org/m",
        dataset_path=tmp_path / "data.jsonl",
        output_dir=tmp_path / "out",
        hyperparameters={declared.name: value},
    )
    assert getattr(read_spec(write_spec(spec, tmp_path / "spec.json")).hyperparameters, declared.name) == value


def test_a_stored_hyperparameter_the_trainer_would_refuse_fails_the_run_before_it_starts(team, tiny_llama_in_cache):
    """A run's stored settings that no longer validate (a row edited by hand): the train stage refuses them with the
    trainer's own message, before any spec is written or a trainer started."""
    name, _ = tiny_llama_in_cache
    dataset = write_jsonl(team["root"] / "datasets" / "mine.jsonl", QA_ROWS * 4)
    project = create_project(
        actor=Actor.command_line(team["mallory"]), data=fields(team["root"], name, dataset_path=str(dataset))
    )
    run = start(project, team["mallory"])
    assert stages.resolve_stage(run.pk) is True
    run.refresh_from_db()
    TrainingRun.objects.filter(pk=run.pk).update(
        config={**run.config, "hyperparameters": {**run.config["hyperparameters"], "lora_r": 0}}
    )
    spec_file = stages.run_dir(run.pk) / "spec.json"
    spec_file.unlink(missing_ok=True)  # the work folder of an earlier session's run with this id
    assert stages.train_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "train", "invalid_hyperparameter")
    assert "'lora_r'" in run.error_message and run.error_hint
    assert not spec_file.exists()


def _named_hyperparameters(source: str) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and node.value in HYPERPARAMETERS
    }


def test_no_module_keeps_its_own_list_of_hyperparameters():
    """A module or template that names three or more hyperparameters as text is a second list to keep in sync."""
    base = Path(settings.BASE_DIR)
    lists = {}
    for path in (base / "projects").rglob("*.py"):
        if path.name != "hyperparameters.py" and "migrations" not in path.parts:
            named = _named_hyperparameters(path.read_text())
            if len(named) >= 3:
                lists[str(path)] = named
    for path in (base / "templates").rglob("*.html"):
        named = {name for name in HYPERPARAMETERS if re.search(rf"\b{name}\b", path.read_text())}
        if len(named) >= 3:
            lists[str(path)] = named
    assert lists == {}


# --- run statuses -----------------------------------------------------------------------------------------------


def test_statuses_split_into_live_and_ended_and_name_their_stage():
    assert set(LIVE_STATUSES) | set(ENDED_STATUSES) == set(RunStatus) and not set(LIVE_STATUSES) & set(ENDED_STATUSES)
    assert all(status.worker_stage in RunStage.values for status in RunStatus if status.worker_stage)
    assert all(not status.worker_stage for status in ENDED_STATUSES)


@pytest.mark.parametrize("status", list(RunStatus), ids=str)
def test_a_status_shows_its_badge_polls_only_while_live_and_offers_resume_if_resumable(owner, status, tmp_path):
    project = make_project(owner, output_directory=str(tmp_path))
    run = TrainingRun.objects.create(project=project, status=status)
    run.run_folder = str(tmp_path / f"run-{run.pk}")  # a run's checkpoints are in its own folder
    run.save()
    checkpoint = tmp_path / f"run-{run.pk}" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    client = secure_client(owner)
    runs = client.get(f"/projects/{project.pk}/").content.decode()
    assert f'<span class="badge {status.badge}">{status.value}</span>' in runs
    page = client.get(f"/projects/runs/{run.pk}/", HTTP_HX_REQUEST="true")
    assert page.status_code == (200 if status.live else 286)
    assert ('hx-trigger="every 2s"' in page.content.decode()) == status.live
    assert ("Resume from checkpoint-4" in page.content.decode()) == status.resumable


def test_the_api_enumerations_are_the_models(client, db):
    _, token = make_user_token("reader")
    schemas = call(client, "get", "/openapi.json", token=token).json()["components"]["schemas"]
    run = schemas["RunOut"]["properties"]
    assert run["status"]["enum"] == RunStatus.values
    assert [option for option in run["stage_failed"]["anyOf"] if "enum" in option][0]["enum"] == RunStage.values


# --- a run's JSON columns -----------------------------------------------------------------------------------------


def test_progress_and_metrics_are_written_and_read_in_one_shape(client, owner):
    project = make_project(owner)
    run = TrainingRun.objects.create(project=project, status=RunStatus.TRAINING)
    line = format_event(
        "progress",
        0.0,
        step=3,
        total_steps=12,
        epoch=0.25,
        loss=2.5,
        learning_rate=1e-4,
        tokens_per_second=1234.0,
        eta_seconds=95.0,
        logged=True,
        extra="not part of the shape",
    )
    _RunRecorder(run.pk).on_event(parse_event(line))
    run.refresh_from_db()
    expected = {"step": 3, "total_steps": 12, "epoch": 0.25, "loss": 2.5, "learning_rate": 1e-4}
    assert run.progress == RunProgress(**expected, tokens_per_second=1234.0, eta_seconds=95.0).model_dump()
    assert run.metrics == [{"step": 3, "loss": 2.5, "learning_rate": 1e-4, "tokens_per_second": 1234.0}]
    _, token = make_user_token("reader")
    body = call(client, "get", f"/runs/{run.pk}", token=token).json()
    assert body["progress"] == run.progress and body["metrics"] == run.metrics
    html = secure_client(owner).get(f"/projects/runs/{run.pk}/").content.decode()
    assert "step 3 / 12" in html and "25%" in html and "ETA 1m 35s" in html and "<polyline" in html


def test_the_validation_report_is_written_and_read_in_one_shape(client, owner, tmp_path):
    report = validate_output(tmp_path / "empty-output", "Say hello:", base_model_path=None)
    assert not report.passed and [check.name for check in report.checks] == list(CHECK_LABELS)
    project = make_project(owner)
    stored = {**report.model_dump(), "checks": [*report.model_dump()["checks"], "junk", {"name": 7}]}
    run = TrainingRun.objects.create(project=project, status=RunStatus.FAILED, validation=stored)
    read = ValidationReport.read(run.validation)
    assert read.checks[:4] == report.checks and read.checks[4].name == "7" and len(read.checks) == 5
    _, token = make_user_token("reader")
    body = call(client, "get", f"/runs/{run.pk}", token=token).json()
    assert body["validation"] == read.model_dump()
    html = secure_client(owner).get(f"/projects/runs/{run.pk}/").content.decode()
    table = between(html, '<table class="table compact checks">', "</table>")
    assert all(label in table for label in CHECK_LABELS.values()) and table.count("<tr class=") == 5
    assert "missing from" in table and "Say hello:" in html
