"""Hyperparameters: what forms and JSON send is parsed and checked by the pydantic model alone, each refusal is a
Problem that names its field, and the project form places problems by that field."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from mtm.shared.problems import Problem
from projects.datasets.eval_split import eval_source_problems
from projects.forms import ProjectForm
from projects.hyperparameters import HYPERPARAMETERS, Hyperparameters
from projects.models import TrainingProject
from projects.services import ProjectCheck


@pytest.mark.parametrize(
    ("sent", "parsed"),
    [
        ({"packing": ""}, {"packing": False}),  # a cleared checkbox
        (
            {"packing": "on", "keep_best_eval": 1, "merge_after_training": "No"},
            {"packing": True, "keep_best_eval": True},
        ),
        ({"epochs": "2", "learning_rate": "2e-4", "seed": " 7 "}, {"epochs": 2.0, "learning_rate": 2e-4, "seed": 7}),
        ({"max_steps": 10.0}, {"max_steps": 10}),  # a JSON float that is whole
        ({"precision": " BF16 ", "objective": "DPO"}, {"precision": "bf16", "objective": "dpo"}),
        ({"lora_target_modules": "q_proj, v_proj"}, {"lora_target_modules": ["q_proj", "v_proj"]}),
        ({"lora_target_modules": " all-linear "}, {"lora_target_modules": "all-linear"}),
    ],
)
def test_form_text_and_json_values_are_parsed_by_the_model(sent, parsed):
    values, problems = Hyperparameters.from_dict(sent)
    assert problems == []
    assert {name: getattr(values, name) for name in parsed} == parsed
    assert Hyperparameters(**sent) == values  # the model itself, not a second parser


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", True),  # a bool is not a number
        ("seed", "3.0"),  # text for a whole number is a whole number
        ("epochs", "inf"),
        pytest.param("learning_rate", 10**400, id="learning_rate-past-the-largest-float"),
        ("packing", 2),
        ("precision", 16),
        ("lora_target_modules", "q proj"),
        ("lora_target_modules", [["q_proj"]]),
    ],
)
def test_every_refusal_is_a_problem_that_names_its_field(name, value):
    values, problems = Hyperparameters.from_dict({name: value, "lora_r": 8})
    assert [(p.code, p.field) for p in problems] == [("invalid_hyperparameter", name)]
    assert f"'{name}'" in problems[0].message and HYPERPARAMETERS[name].allowed() in problems[0].message
    assert getattr(values, name) == HYPERPARAMETERS[name].default and values.lora_r == 8  # the valid value is kept


def test_unknown_names_and_a_body_that_is_not_an_object_are_named_too():
    _, problems = Hyperparameters.from_dict({"learnin_rate": 0.1, "epochs": 0})
    assert [p.field for p in problems] == ["learnin_rate", "epochs"]
    _, problems = Hyperparameters.from_dict(["epochs", 3])  # type: ignore[arg-type]
    assert [p.field for p in problems] == [""] and "JSON object" in problems[0].message


def test_a_problem_lists_its_field_only_when_it_names_one():
    assert Problem("c", "m", "h").model_dump() == {"code": "c", "message": "m", "hint": "h"}
    assert Problem("c", "m", "h", field="epochs").model_dump() == {
        "code": "c",
        "message": "m",
        "hint": "h",
        "field": "epochs",
    }


def test_the_form_places_each_problem_under_the_box_it_names(db):
    """A conflict one box resolves stands under that box; one between two settings stands above the form."""
    _, problems = Hyperparameters.from_dict(
        {"objective": "dpo", "packing": "on", "warmup_ratio": 0.1, "warmup_steps": 5}
    )
    check = ProjectCheck()
    for problem in problems:
        check.error("hyperparameters", problem)
    for problem in eval_source_problems("sft", 0.2, "/data/eval.jsonl"):  # filed under the eval file, names the share
        check.error("eval_dataset_path", problem)
    form = ProjectForm(data={"method": "lora", "objective": "dpo", "packing": "on"})
    form.is_valid()
    form.add_problems(check)
    assert "packing does not apply to the DPO objective" in str(form.errors["packing"])
    assert "Two eval sets are chosen" in str(form.errors["eval_dataset_path"]) and "Two eval sets are chosen" in str(
        form.errors["eval_fraction"]
    )
    above = " ".join(str(error) for error in form.non_field_errors())
    assert "are both set" in above and "packing" not in above


def test_a_project_reads_its_hyperparameters_as_the_typed_model(db):
    owner = User.objects.create_user("kim")
    stored = {"epochs": "2", "batch_size": 0, "objective": "dpo", "unknown": 1}  # a row written by hand
    project = TrainingProject(owner=owner, name="p", model_name="org/m", hyperparameters=stored)
    values = project.hyperparameter_values
    assert isinstance(values, Hyperparameters)
    assert (values.epochs, values.batch_size, values.objective) == (2.0, Hyperparameters().batch_size, "dpo")
    assert project.method_summary == "LoRA · DPO"
    project.hyperparameters = None
    assert project.hyperparameter_values == Hyperparameters()
