"""The project form: fields as a person types them; every check beyond the field's shape is the service's.

The form turns its values into the dict `projects.services` takes, and puts each Problem the service
returns (message and hint) under the field it belongs to, as the Problem names it.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html

from models_registry.lookup import dataset_roots, output_roots
from mtm.shared.problems import Problem
from projects.datasets import UPLOAD_EXTENSIONS
from projects.hyperparameters import GROUPS, HYPERPARAMETERS, Declared, Hyperparameters
from projects.models import TrainingMethod, TrainingProject
from projects.services import EDITABLE

SERVICE_FIELDS = tuple(name for name in EDITABLE if name != "hyperparameters")  # hyperparameters: one box each
NUMBER_KINDS = ("int", "float")


def _hyperparameter_box(declared: Declared) -> forms.Field:
    """The box a hyperparameter's kind calls for; numbers are typed as text so the validator names bad ones."""
    common = {"label": declared.label, "help_text": declared.help, "required": False}
    if declared.kind == "bool":
        return forms.BooleanField(**common)
    if declared.kind == "choice":
        return forms.ChoiceField(choices=[(choice, choice) for choice in declared.choices], **common)
    if declared.kind in NUMBER_KINDS:
        return forms.CharField(max_length=40, widget=forms.NumberInput(attrs={"step": "any"}), **common)
    return forms.CharField(max_length=500, **common)


def problem_error(problem: Problem) -> forms.ValidationError:
    """A form error that shows the Problem's message and its hint (escaped; numbered hints as steps)."""
    hint = render_to_string("partials/_hint.html", {"hint": problem.hint}) if problem.hint else ""
    return forms.ValidationError(format_html("<strong>{}</strong>{}", problem.message, hint), code=problem.code)


def _number(text: str) -> int | float | str:
    """'3' → 3, '0.0002' → 0.0002, '2e-4' → 0.0002; anything else is returned as typed."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _roots(roots: list[str]) -> str:
    return ", ".join(roots) if roots else "none configured: ask staff to set one in Settings"


def example_path(roots: list[str], name: str) -> str:
    """A path to show as an example: `name` inside the first allowed root ("" when none is configured)."""
    return f"{roots[0].rstrip('/')}/{name}" if roots else ""


class ProjectForm(forms.Form):
    upload_kept = False  # a re-shown form says so when it holds the path of the upload just stored
    name = forms.CharField(label="Name", max_length=120, required=False)
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    model_name = forms.CharField(
        label="Base model",
        max_length=200,
        required=False,
        help_text="A Hugging Face repo id in the model cache, e.g. meta-llama/Llama-3.2-3B-Instruct.",
    )
    revision = forms.CharField(label="Revision", max_length=255, required=False)
    dataset_file = forms.FileField(label="Upload a dataset", required=False)
    dataset_path = forms.CharField(label="or a dataset file on the server", max_length=4096, required=False)
    # The signed note of an upload refused on this form (projects.datasets.uploads.refusal_token), for the save.
    refused_upload = forms.CharField(required=False, widget=forms.HiddenInput)
    eval_dataset_path = forms.CharField(label="Eval file (optional)", max_length=4096, required=False)
    output_directory = forms.CharField(label="Output directory", max_length=4096, required=False)
    # The folder last suggested for the name: while the output box still holds it, it follows the name typed.
    output_suggested = forms.CharField(max_length=4096, required=False, widget=forms.HiddenInput)
    method = forms.ChoiceField(label="Method", choices=TrainingMethod.choices, widget=forms.RadioSelect)
    validation_prompt = forms.CharField(
        label="Validation prompt",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="After training the model completes this prompt as its inference test. Blank: the prompt of the "
        "dataset's last row, kept out of training when the dataset has 10 rows or more (else its first prompt).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, declared in HYPERPARAMETERS.items():
            self.fields[name] = _hyperparameter_box(declared)
        self.fields["dataset_file"].widget.attrs.update(
            {
                "accept": ",".join(UPLOAD_EXTENSIONS),
                "hx-post": reverse("projects:upload-dataset"),
                "hx-encoding": "multipart/form-data",
                "hx-trigger": "change",
                "hx-target": "#dataset-field",
                "hx-swap": "outerHTML",
                "hx-indicator": "#dataset-field",
            }
        )
        datasets = dataset_roots()
        self.fields[
            "dataset_path"
        ].help_text = f"JSONL, JSON array or CSV; an absolute path inside an allowed dataset root ({_roots(datasets)})."
        self.fields["dataset_path"].widget.attrs.update(
            {
                "placeholder": example_path(datasets, "train.jsonl"),
                "spellcheck": "false",
                "autocomplete": "off",
                "hx-get": reverse("projects:check-dataset"),
                "hx-trigger": "input changed delay:500ms",
                "hx-include": "#id_dataset_path, #id_model_name, #id_revision, #id_max_seq_length, #id_objective, "
                "#id_max_prompt_length",
                "hx-target": "#dataset-status",
                "hx-sync": "this:replace",
                "hx-indicator": "#dataset-field",
            }
        )
        self.fields["eval_dataset_path"].help_text = (
            "A separate file of rows to measure eval loss on, checked like the dataset (same formats and roots). "
            "Blank: no eval file; or hold out a share of the dataset with 'Eval set (share of the rows)' instead, "
            "not both."
        )
        self.fields["eval_dataset_path"].widget.attrs.update(
            {
                "placeholder": example_path(datasets, "eval.jsonl"),
                "spellcheck": "false",
                "autocomplete": "off",
                "hx-get": reverse("projects:check-eval-dataset"),
                "hx-trigger": "input changed delay:500ms",
                "hx-include": "#id_eval_dataset_path, #id_dataset_path, #id_model_name, #id_revision, #id_max_seq_length, "
                "#id_chat_template, #id_objective, #id_max_prompt_length, #id_eval_fraction",
                "hx-target": "#eval-dataset-status",
                "hx-sync": "this:replace",
            }
        )
        roots = output_roots()
        self.fields[
            "output_directory"
        ].help_text = f"Where checkpoints and the trained model go; inside an allowed output root ({_roots(roots)})."
        self.fields["output_directory"].widget.attrs.update(
            {
                "placeholder": example_path(roots, "my-project"),
                "spellcheck": "false",
                "autocomplete": "off",
                "hx-get": reverse("projects:check-output-dir"),
                "hx-trigger": "input changed delay:400ms",
                "hx-target": "#output-status",
                "hx-sync": "this:replace",
            }
        )

    def follow_name(self) -> None:
        """Have the output directory follow the name as it is typed (a new project's form), until the member
        changes the output directory herself."""
        self.fields["name"].widget.attrs.update(
            {
                "hx-get": reverse("projects:follow-output-dir"),
                "hx-trigger": "input changed delay:300ms",
                "hx-include": "#id_name, #id_output_directory, #id_output_suggested",
                "hx-target": "#output-field",
                "hx-swap": "outerHTML",
                "hx-sync": "this:replace",
            }
        )

    @staticmethod
    def initial_for(project: TrainingProject | None) -> dict[str, Any]:
        """The values a new form (defaults) or an edit form (the project's values) starts with."""
        if project is None:
            initial: dict[str, Any] = {"method": TrainingMethod.LORA}
            hp = Hyperparameters().to_dict()
        else:
            initial = {name: getattr(project, name) for name in SERVICE_FIELDS}
            hp = project.hyperparameter_values.to_dict()
        for name, value in hp.items():
            initial[name] = ", ".join(value) if isinstance(value, list) else value
        return initial

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters as the service takes them, numbers as numbers (as JSON would send them); a blank
        box keeps the default (or the old value); text that is not a number is passed on for the validator to
        name."""
        values: dict[str, Any] = {}
        for name, declared in HYPERPARAMETERS.items():
            value = self.cleaned_data.get(name)
            if isinstance(value, str):
                value = value.strip()
                if not value:
                    continue
                if declared.kind in NUMBER_KINDS:
                    value = _number(value)
            values[name] = value
        return values

    def project_data(self, dataset_path: str) -> dict[str, Any]:
        data = {name: self.cleaned_data.get(name, "") for name in SERVICE_FIELDS}
        data["dataset_path"] = dataset_path.strip()
        data["eval_dataset_path"] = data["eval_dataset_path"].strip()
        data["model_name"] = data["model_name"].strip()
        data["hyperparameters"] = self.hyperparameters()
        return data

    def keep_dataset_path(self, path: str, *, upload_kept: bool = True) -> None:
        """Show a stored upload's path in the path box, so a re-shown form does not ask for the file again (or,
        with upload_kept=False, put back the path typed before a refused upload was deleted)."""
        self.data = self.data.copy()
        self.data["dataset_path"] = path
        self.upload_kept = upload_kept

    def add_problems(self, check: Any) -> None:
        """Put each of a ProjectCheck's errors under the box it was filed under and under the box it names (its
        `field`: a hyperparameter's, or the other box of a choice between two, which opens its group); one that
        names no box of this form stands above the form."""
        for key, problems in check.errors.items():
            for problem in problems:
                boxes = [name for name in dict.fromkeys((key, problem.field)) if name in self.fields]
                for box in boxes or [None]:
                    self.add_error(box, problem_error(problem))

    @property
    def failing_boxes(self) -> list[forms.BoundField]:
        """The boxes with an error, in the form's order (the banner above the form links to each)."""
        return [self[name] for name in self.fields if name in self.errors]

    def field_groups(self) -> dict[str, dict[str, list[forms.BoundField]]]:
        """Each fieldset's boxes (typed values) and checks (checkboxes), in declaration order."""
        groups: dict[str, dict[str, list[forms.BoundField]]] = {group: {"boxes": [], "checks": []} for group in GROUPS}
        for name, declared in HYPERPARAMETERS.items():
            groups[declared.group]["checks" if declared.kind == "bool" else "boxes"].append(self[name])
        return groups
