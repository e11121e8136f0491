"""The project form's checks as you type: the output directory, the dataset (a server path or an upload) and the
eval file (checked as the dataset is).

Each endpoint answers 200 with a fragment of the form page for any input: the verdict is in the fragment.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from models_registry.names import name_error
from models_registry.outputs import OutputDirCheck
from models_registry.services import dataset_roots, resolve_model, validate_output_dir
from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest
from projects.chat_templates import with_chat_template
from projects.datasets import DatasetError, check_dataset_path, inspect_dataset
from projects.datasets.eval_split import eval_file_warnings, eval_source_problems
from projects.datasets.pairs import objective_problem
from projects.forms import ProjectForm
from projects.hyperparameters import HYPERPARAMETERS, Hyperparameters
from projects.models import TrainingProject
from projects.ownership import output_dir_conflicts
from projects.services import load_tokenizer
from projects.uploads import discard_refused, receive_upload, upload_problems

MAX_PARAM_CHARS = 4096


def output_status(raw: str, actor: Any, project: TrainingProject | None = None) -> OutputDirCheck:
    """The output directory's check as the form shows it, with the folder-ownership rule applied for `actor`."""
    check = validate_output_dir(raw[:MAX_PARAM_CHARS])
    if check.valid:
        check.errors.extend(output_dir_conflicts(check.path or "", actor, project))
    return check


def _max_seq_length(raw: str) -> tuple[int, str]:
    """The typed max sequence length, or the default with a note when the box holds something else."""
    default = Hyperparameters().max_seq_length
    if not raw.strip():
        return default, ""
    values, problems = Hyperparameters.from_dict({"max_seq_length": raw[:40]})
    if problems:
        return default, f"Max sequence length '{raw[:40]}' is not usable; token lengths are counted against {default}."
    return values.max_seq_length, ""


def _typed_values(params: Any) -> Hyperparameters:
    """The hyperparameters typed in the form so far that are valid; defaults for the rest."""
    valid = {}
    for name, declared in HYPERPARAMETERS.items():
        raw = params.get(name)
        if isinstance(raw, str) and raw.strip():
            value, problem = declared.check(raw.strip()[:MAX_PARAM_CHARS])
            if problem is None:
                valid[name] = value
    return Hyperparameters(**valid)


def _tokenizer(model_name: str, revision: str) -> tuple[Any, str]:
    """The tokenizer of the model typed in the form, or None with why token lengths are not shown."""
    if not model_name or name_error(model_name):
        return None, "Token lengths are shown once the base model above is a valid model name."
    resolution = resolve_model(model_name, revision or None)
    if not resolution.valid:
        return None, f"Token lengths are shown once the base model '{model_name}' resolves (see its check above)."
    tokenizer = load_tokenizer(resolution)
    if tokenizer is None:
        return None, f"The tokenizer of '{model_name}' could not be loaded, so token lengths are not shown."
    return tokenizer, ""


def dataset_status(path: str, params: Any, actor: Any) -> dict[str, Any]:
    """What the dataset box shows `actor` for `path`: where it is, its format, rows, first rows, token lengths,
    problems. Another member's upload is refused before anything of it is read."""
    status: dict[str, Any] = {"path": path}
    if not path.strip():
        return status
    located = check_dataset_path(path[:MAX_PARAM_CHARS], dataset_roots())
    status["errors"] = located.errors or upload_problems(located, actor, None)
    if status["errors"]:
        return status
    max_seq_length, length_note = _max_seq_length(params.get("max_seq_length", ""))
    model_name = params.get("model_name", "").strip()[:200]
    tokenizer, tokenizer_note = _tokenizer(model_name, params.get("revision", "").strip()[:255])
    tokenizer = with_chat_template(tokenizer, params.get("chat_template", "")[:40])
    typed = _typed_values(params)
    report = inspect_dataset(
        located.path, tokenizer, max_seq_length, model=f"'{model_name}'", max_prompt_length=typed.max_prompt_length
    )
    # A file that does not fit the objective chosen so far is a note, not an error: the objective may change next.
    mismatch = objective_problem(typed.objective, report.format) if report.valid else None
    status.update(
        report=report,
        errors=report.errors,
        notes=[note for note in (length_note, tokenizer_note, mismatch and mismatch.message) if note],
        uploaded=located.uploaded,
    )
    return status


@require_http_methods(["GET"])
@login_required
def check_output_dir(request: HtmxHttpRequest) -> HttpResponse:
    raw = request.GET.get("output_directory", "")
    context = {"output_check": output_status(raw, request.user) if raw.strip() else None}
    return render(request, "projects/form.html#output-status", context)


@require_http_methods(["GET"])
@login_required
def check_dataset(request: HtmxHttpRequest) -> HttpResponse:
    status = dataset_status(request.GET.get("dataset_path", ""), request.GET, request.user)
    return render(request, "projects/form.html#dataset-status", {"dataset": status})


@require_http_methods(["GET"])
@login_required
def check_eval_dataset(request: HtmxHttpRequest) -> HttpResponse:
    """The eval file's box: the dataset's check of that file, and a note when a share of the dataset is chosen too
    (refused on save; the share may still change)."""
    path = request.GET.get("eval_dataset_path", "")
    status = dataset_status(path, request.GET, request.user)
    if path.strip() and not status.get("errors"):
        typed = _typed_values(request.GET)
        eval_file = path.strip()[:MAX_PARAM_CHARS]
        conflicts = eval_source_problems(typed.objective, typed.eval_fraction, eval_file)
        dataset = request.GET.get("dataset_path", "").strip()[:MAX_PARAM_CHARS]
        doubts = eval_file_warnings(dataset, None, eval_file, None)  # the formats are compared on save
        status["notes"] = [*status.get("notes", []), *(f"{p.message} {p.hint}" for p in conflicts + doubts)]
    return render(request, "projects/form.html#dataset-status", {"dataset": status})


@require_http_methods(["POST"])
@login_required
def upload_dataset(request: HtmxHttpRequest) -> HttpResponse:
    """Store the file chosen in the form right away and show its check; the path box then holds its stored path.
    A file that cannot be trained on is shown with its problems and deleted, as the API does."""
    upload = request.FILES.get("dataset_file")
    path = request.POST.get("dataset_path", "")
    status: dict[str, Any] = {"path": path}
    if upload is None:
        status["errors"] = []
    else:
        try:
            received = receive_upload(Actor.of(request, Channel.PAGE), upload, upload.name)
            stored = str(received)
        except DatasetError as exc:
            status["upload_errors"] = exc.problems
        else:
            status = {
                **dataset_status(stored, request.POST, request.user),
                "upload_name": upload.name,
                "reused": received.reused,
            }
            if status.get("errors"):
                status["discarded"] = discard_refused(received, actor=Actor.of(request, Channel.PAGE))
            else:
                path = stored
    form = ProjectForm(initial={"dataset_path": path})
    return render(request, "projects/form.html#dataset-field", {"form": form, "dataset": status})
