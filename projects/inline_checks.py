"""The project form's checks as you type: the output directory, the dataset (a server path or an upload), the
eval file (checked as the dataset is) and the hyperparameters that depend on the base model (max_seq_length against
its context length, lora_target_modules against its layers).

Each endpoint answers 200 with a fragment of the form page for any input: the verdict is in the fragment. The
dataset checks read only the start of the file; its token lengths are counted by a worker and polled for
(`token_count`). A member with MTM_EXPENSIVE_REQUESTS_PER_MEMBER dataset checks in progress is answered 429.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseStopPolling

from models_registry.lookup import dataset_roots, resolve_model
from models_registry.names import name_error
from models_registry.outputs import OutputDirCheck
from models_registry.resolution import Resolution
from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest
from mtm.request_limits import limited_view
from mtm.shared.problems import Problem
from projects.context_length import seq_length_warning
from projects.datasets import DatasetError, check_dataset_path
from projects.datasets.chat_templates import BUILT_IN
from projects.datasets.eval_split import eval_file_warnings, eval_source_problems
from projects.datasets.pairs import objective_problem
from projects.datasets.report import read_dataset
from projects.datasets.token_stats import count_problems, request_count
from projects.datasets.uploads import (
    RefusedUpload,
    as_uploaded,
    discard_refused,
    receive_upload,
    refusal_token,
    upload_problems,
)
from projects.forms import ProjectForm
from projects.hyperparameters import HYPERPARAMETERS, MODEL_FIT_BOXES, Hyperparameters
from projects.lora_targets import lora_target_problems
from projects.models import TokenCount, TrainingProject
from projects.ownership import checked_output_dir

MAX_PARAM_CHARS = 4096


def output_status(raw: str, user: Any, project: TrainingProject | None = None) -> OutputDirCheck:
    """The output directory's check as the form shows it, with the folder-ownership rule applied for `user`."""
    return checked_output_dir(raw[:MAX_PARAM_CHARS], user, project)


def hyperparameter_status(name: str, params: Any) -> dict[str, list[Any]]:
    """What the form shows under the hyperparameter box `name` for the values in `params`: its own problem when the
    value is not one the box takes (out of range, not a number), else, for MODEL_FIT_BOXES, how it fits the base
    model typed above (the same checks a save makes). Nothing when the box is blank or the model does not resolve
    (the model's own check says why)."""
    raw = str(params.get(name) or "").strip()[:MAX_PARAM_CHARS]
    if name not in HYPERPARAMETERS or not raw:
        return {}
    values, problems = Hyperparameters.from_dict({name: raw})
    if own := [problem for problem in problems if problem.field == name]:
        return {"errors": own}
    if name not in MODEL_FIT_BOXES:
        return {}
    value = getattr(values, name)
    model_name = str(params.get("model_name") or "").strip()[:200]
    revision = str(params.get("revision") or "").strip()[:255]
    if name == "max_seq_length":
        warning = seq_length_warning(model_name, revision, value)
        return {"warnings": [warning]} if warning else {}
    if params.get("method", "lora") != "lora" or not model_name or name_error(model_name):
        return {}
    resolution = resolve_model(model_name, revision or None)
    if not resolution.valid or resolution.path is None:
        return {}
    return {"errors": lora_target_problems(resolution.path, resolution.revision or "", value, model_name)}


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
    typed = {name: params.get(name) for name in HYPERPARAMETERS}
    values, _ = Hyperparameters.from_dict(
        {name: raw.strip()[:MAX_PARAM_CHARS] for name, raw in typed.items() if isinstance(raw, str) and raw.strip()}
    )
    return values


def _resolution(model_name: str, revision: str) -> tuple[Resolution | None, str]:
    """The resolved model typed in the form (no tokenizer is loaded here), or None with why token lengths are not
    shown."""
    if not model_name or name_error(model_name):
        return None, "Token lengths are shown once the base model above is a valid model name."
    resolution = resolve_model(model_name, revision or None)
    if not resolution.valid:
        return None, f"Token lengths are shown once the base model '{model_name}' resolves (see its check above)."
    return resolution, ""


TOKEN_COUNT_SALT = "projects.token-count"
TOKEN_COUNT_MAX_AGE = 24 * 3600
# A count still pending after this long has no worker to run it: the page says so while it keeps asking.
SLOW_COUNT = timedelta(seconds=30)


def token_count_url(count: TokenCount, user: Any) -> str:
    """Where the page asks for a count: signed for the member who asked, so no one else can read it by its id."""
    signed = signing.dumps({"c": count.pk, "u": user.pk}, salt=TOKEN_COUNT_SALT)
    return f"{reverse('projects:token-count')}?c={signed}"


def counting(count: TokenCount, url: str) -> dict[str, Any]:
    """What the token-count region shows: "Counting tokens…" (polling `url`) or the counts with their warnings."""
    if count.state == TokenCount.State.PENDING:
        slow = count.requested_at < timezone.now() - SLOW_COUNT
        return {"pending": True, "url": url, "slow": slow}
    result = count.result
    return {
        "pending": False,
        "url": url,
        "stats": result.get("token_stats"),
        "pair_stats": result.get("pair_token_stats"),
        "rows": result.get("rows", 0),
        "complete": result.get("complete", True),
        "warnings": count_problems(count, "warnings"),
        "errors": count_problems(count, "errors"),
        "note": result.get("note", ""),
    }


def dataset_status(path: str, params: Any, user: Any) -> dict[str, Any]:
    """What the dataset box shows `user` for `path`: where it is, its format, rows, first rows, problems, and its
    token lengths (counted on a worker: "Counting tokens…" until they are). Only the start of the file is read
    here; another member's upload is refused before anything of it is read."""
    status: dict[str, Any] = {"path": path}
    if not path.strip():
        return status
    located = check_dataset_path(path[:MAX_PARAM_CHARS], dataset_roots())
    status["errors"] = located.errors or upload_problems(located, user, None)
    if status["errors"]:
        return status
    max_seq_length, length_note = _max_seq_length(params.get("max_seq_length", ""))
    model_name = params.get("model_name", "").strip()[:200]
    revision = params.get("revision", "").strip()[:255]
    resolution, tokenizer_note = _resolution(model_name, revision)
    choice = params.get("chat_template", "")[:40]
    typed = _typed_values(params)
    read = read_dataset(located.path)
    report = read.report
    count = None
    if resolution is not None:
        count = request_count(
            read,
            located.path,
            user,
            resolution,
            model_name=model_name,
            revision=revision,
            max_seq_length=max_seq_length,
            max_prompt_length=typed.max_prompt_length,
            chat_template=choice if choice in BUILT_IN else "",
        )
    # A file that does not fit the objective chosen so far is a note, not an error: the objective may change next.
    mismatch = objective_problem(typed.objective, report.format) if report.valid else None
    status.update(
        report=report,
        errors=report.errors,
        notes=[note for note in (length_note, tokenizer_note, mismatch and mismatch.message) if note],
        uploaded=located.uploaded,
        counting=counting(count, token_count_url(count, user)) if count is not None else None,
    )
    return status


def _path_param(params: Any, name: str) -> str:
    """The path typed in another box, bounded; "" when it holds a NUL byte (no file's path has one, the OS refuses
    it, and that box's own check says so)."""
    path = params.get(name, "").strip()[:MAX_PARAM_CHARS]
    return "" if "\x00" in path else path


def _busy_check(field: str) -> Callable[[HtmxHttpRequest, Problem], HttpResponse]:
    def render_busy(request: HtmxHttpRequest, problem: Problem) -> HttpResponse:
        status = {"path": request.GET.get(field, "")[:MAX_PARAM_CHARS] or "(no path)", "errors": [problem]}
        return render(request, "projects/form.html#dataset-status", {"dataset": status})

    return render_busy


def _busy_upload(request: HtmxHttpRequest, problem: Problem) -> HttpResponse:
    form = ProjectForm(initial={"dataset_path": request.POST.get("dataset_path", "")})
    status = {"path": "", "upload_errors": [problem]}
    return render(request, "projects/form.html#dataset-field", {"form": form, "dataset": status})


@require_http_methods(["GET"])
@login_required
def output_dir_inline(request: HtmxHttpRequest) -> HttpResponse:
    """The output directory box's status as the person types (HTMX); the check itself is check_output_dir."""
    raw = request.GET.get("output_directory", "")
    context = {"output_check": output_status(raw, request.user) if raw.strip() else None}
    return render(request, "projects/form.html#output-status", context)


def _busy_hyperparameter(request: HtmxHttpRequest, problem: Problem) -> HttpResponse:
    return render(request, "projects/form.html#hyperparameter-status", {"status": {"errors": [problem]}})


@require_http_methods(["GET"])
@login_required
@limited_view(_busy_hyperparameter)
def check_hyperparameter(request: HtmxHttpRequest, name: str) -> HttpResponse:
    if name not in HYPERPARAMETERS or HYPERPARAMETERS[name].kind == "bool":
        raise Http404("No check as you type for this box.")
    context = {"status": hyperparameter_status(name, request.GET)}
    return render(request, "projects/form.html#hyperparameter-status", context)


@require_http_methods(["GET"])
@login_required
@limited_view(_busy_check("dataset_path"))
def check_dataset(request: HtmxHttpRequest) -> HttpResponse:
    status = dataset_status(request.GET.get("dataset_path", ""), request.GET, request.user)
    return render(request, "projects/form.html#dataset-status", {"dataset": status})


@require_http_methods(["GET"])
@login_required
@limited_view(_busy_check("eval_dataset_path"))
def check_eval_dataset(request: HtmxHttpRequest) -> HttpResponse:
    """The eval file's box: the dataset's check of that file, and a note when a share of the dataset is chosen too
    (refused on save; the share may still change)."""
    path = request.GET.get("eval_dataset_path", "")
    status = dataset_status(path, request.GET, request.user)
    if path.strip() and not status.get("errors"):
        typed = _typed_values(request.GET)
        eval_file = path.strip()[:MAX_PARAM_CHARS]
        conflicts = eval_source_problems(typed.objective, typed.eval_fraction, eval_file)
        dataset = _path_param(request.GET, "dataset_path")
        doubts = eval_file_warnings(dataset, None, eval_file, None)  # the formats are compared on save
        status["notes"] = [*status.get("notes", []), *(f"{p.message} {p.hint}" for p in conflicts + doubts)]
    return render(request, "projects/form.html#dataset-status", {"dataset": status})


@require_http_methods(["POST"])
@login_required
@limited_view(_busy_upload)
def upload_dataset(request: HtmxHttpRequest) -> HttpResponse:
    """Store the file chosen in the form right away and show its check; the path box then holds its stored path.
    A file that cannot be trained on is shown with its problems and deleted, as the API does."""
    upload = request.FILES.get("dataset_file")
    path = request.POST.get("dataset_path", "")
    status: dict[str, Any] = {"path": path}
    refused = None
    if upload is None:
        status["errors"] = []
    else:
        try:
            received = receive_upload(Actor.of(request, Channel.PAGE), upload, upload.name)
            stored = str(received)
        except DatasetError as exc:
            status["upload_errors"] = exc.problems
            refused = RefusedUpload(upload.name, exc.problems)
        else:
            status = {
                **dataset_status(stored, request.POST, request.user),
                "upload_name": upload.name,
                "reused": received.reused,
            }
            if status.get("errors"):
                status["errors"] = as_uploaded(status["errors"], stored, upload.name)
                status["discarded"] = discard_refused(received, actor=Actor.of(request, Channel.PAGE))
                refused = RefusedUpload(upload.name, status["errors"])
            else:
                path = stored
    # A refused upload leaves the path box as it was; the form carries why, so a save without a dataset says so.
    token = refusal_token(request.user, refused) if refused else ""
    form = ProjectForm(initial={"dataset_path": path, "refused_upload": token})
    return render(request, "projects/form.html#dataset-field", {"form": form, "dataset": status})


@require_http_methods(["GET"])
@login_required
def token_count(request: HtmxHttpRequest) -> HttpResponse:
    """The token-count region of a dataset check, polled every 2 s: 200 while counting, 286 (htmx stops polling)
    with the counts."""
    signed = request.GET.get("c", "")[:MAX_PARAM_CHARS]
    try:
        asked = signing.loads(signed, salt=TOKEN_COUNT_SALT, max_age=TOKEN_COUNT_MAX_AGE)
    except signing.BadSignature:
        raise Http404("No such token count.") from None
    if not isinstance(asked, dict) or asked.get("u") != request.user.pk:
        raise Http404("No such token count.")
    count = TokenCount.objects.filter(pk=asked.get("c")).first()
    if count is None:
        raise Http404("No such token count.")
    context = {"counting": counting(count, f"{reverse('projects:token-count')}?c={signed}")}
    response = render(request, "projects/form.html#token-count", context)
    return response if count.state == TokenCount.State.PENDING else HttpResponseStopPolling(response.content)
