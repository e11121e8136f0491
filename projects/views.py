"""Pages of the projects: the list, the new/edit form, a project's detail with its runs, and deletion.

Runs (start, the run page, cancel) are in runs/views.py; the form's inline checks in inline_checks.py.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers

from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest, wants_partial
from mtm.request_limits import Busy, expensive_request
from mtm.shared.problems import Problem
from projects.access import can_manage, require_manage
from projects.context_length import seq_length_warning
from projects.datasets import DatasetError
from projects.datasets.token_stats import saved_count, template_key
from projects.datasets.uploads import as_uploaded, discard_refused, read_refusal, receive_upload
from projects.forms import ProjectForm, problem_error
from projects.hyperparameters import MODEL_FIT_BOXES, QUICK_CHECK
from projects.inline_checks import counting, hyperparameter_status, output_status, token_count_url
from projects.models import LIVE_STATUSES, RESUMABLE_STATUSES, TrainingProject, TrainingRun
from projects.new_project import (
    STARTERS,
    followed_output_directory,
    sample_available,
    starter_values,
    starting_values,
)
from projects.runs import records
from projects.runs.display import eval_source, hyperparameter_rows, run_duration
from projects.runs.views import polled_partial
from projects.services import (
    ProjectBusy,
    ProjectInvalid,
    check_project,
    create_project,
    delete_project,
    update_project,
)


@require_http_methods(["GET", "HEAD"])
@login_required
def project_list(request: HtmxHttpRequest) -> HttpResponse:
    runs = TrainingRun.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-id")
    projects = (
        TrainingProject.objects.select_related("owner")
        .annotate(
            last_run_id=Subquery(runs.values("id")[:1]),
            last_run_status=Subquery(runs.values("status")[:1]),
            last_run_stage=Subquery(runs.values("stage_failed")[:1]),
        )
        .order_by("-created_at", "-id")
    )
    return render(request, "projects/list.html", {"projects": projects})


def refused_upload_problem(name: str) -> Problem:
    return Problem(
        "upload_refused",
        f"Your upload {name} was refused and not kept, so this project has no dataset yet.",
        "Fix the file and upload it again (below, why it was refused), or give the path of a dataset on the server.",
    )


def _save(request: HtmxHttpRequest, form: ProjectForm, project: TrainingProject | None) -> TrainingProject | None:
    """Store an upload, then create or update through the service; None (with the form's errors) when refused.
    An upload whose dataset is refused is deleted; one kept for a form refused for other reasons stays in the
    path box (and is removed by the periodic cleanup if the project is never saved)."""
    typed_path = dataset_path = form.cleaned_data["dataset_path"]
    upload = form.cleaned_data.get("dataset_file")
    upload_failed = False
    stored = None
    if upload:
        try:
            stored = receive_upload(Actor.of(request, Channel.PAGE), upload, upload.name)
            dataset_path = str(stored)
        except DatasetError as exc:
            upload_failed = True
            for problem in exc.problems:
                form.add_error("dataset_file", problem_error(problem))
        else:
            form.keep_dataset_path(dataset_path)
    elif not typed_path.strip() and (refusal := read_refusal(form.cleaned_data["refused_upload"], request.user)):
        # The member did give a dataset: an upload, refused and deleted when it was sent. Say why, not "no dataset".
        upload_failed = True
        form.add_error("dataset_file", problem_error(refused_upload_problem(refusal.name)))
        for problem in refusal.problems:
            form.add_error("dataset_file", problem_error(problem))
    data = form.project_data(dataset_path)
    if upload_failed:  # still show everything else that is wrong, but never save
        found = check_project(data, user=request.user, project=project)
        found.errors.pop("dataset_path", None)
        form.add_problems(found)
        form.dataset_report, form.eval_dataset_report = found.dataset, found.eval_dataset
        form.token_counts = found.counts
        return None
    actor = Actor.of(request, Channel.PAGE)
    try:
        if project is None:
            saved = create_project(data, actor=actor)
        else:
            update_project(project, data, actor=actor)
            saved = project
    except ProjectInvalid as refused:
        if stored and (problems := refused.check.errors.get("dataset_path")):
            refused.check.errors["dataset_path"] = as_uploaded(problems, stored, upload.name)
            discard_refused(stored, actor=Actor.of(request, Channel.PAGE))
            form.keep_dataset_path(typed_path, upload_kept=False)
        form.add_problems(refused.check)
        form.dataset_report, form.eval_dataset_report = refused.check.dataset, refused.check.eval_dataset
        form.token_counts = refused.check.counts
        return None
    return saved


def _dataset_after_post(form: ProjectForm, user: Any, which: str = "dataset_report") -> dict[str, Any] | None:
    """The dataset box (or the eval file's) of a re-shown form: the report the service made, when the file itself
    was fine, with its token counts ("Counting tokens…" while a worker counts them)."""
    report = getattr(form, which, None)
    if report is None or not report.valid:
        return None
    field = "dataset_path" if which == "dataset_report" else "eval_dataset_path"
    count = getattr(form, "token_counts", {}).get(field)
    return {
        "path": report.path,
        "report": report,
        "errors": [],
        "counting": counting(count, token_count_url(count, user)) if count is not None else None,
    }


def _seq_length_warning(form: ProjectForm) -> str:
    return seq_length_warning(
        str(form["model_name"].value() or ""), str(form["revision"].value() or ""), form["max_seq_length"].value()
    )


def _box_status(form: ProjectForm) -> dict[str, dict[str, list[Any]]]:
    """What each box checked against the base model shows when the page is drawn (a box with errors shows those)."""
    params = {name: form[name].value() for name in ("model_name", "revision", "method", *MODEL_FIT_BOXES)}
    return {name: hyperparameter_status(name, params) for name in MODEL_FIT_BOXES if not form[name].errors}


def _form_page(request: HtmxHttpRequest, project: TrainingProject | None) -> HttpResponse:
    status = 200
    retry_after = None
    if request.method == "POST" and project is None and request.POST.get("starter") in STARTERS:
        initial = starter_values(
            request.POST, request.POST["starter"], ProjectForm().fields, ProjectForm.initial_for(None)
        )
        form = ProjectForm(initial=initial)
        if request.POST["starter"] == "quick":
            chosen = ", ".join(f"{name} {value}" for name, value in QUICK_CHECK.items())
            messages.info(request, f"Quick-check preset applied ({chosen}); everything else you typed stays as it was.")
        elif initial.get("dataset_path"):
            messages.info(
                request, f"Sample dataset chosen: {initial['dataset_path']}; everything else you typed stays as it was."
            )
    elif request.method == "POST":
        form = ProjectForm(request.POST, request.FILES)
        status = 422
        try:
            with expensive_request(request.user):  # a save reads the dataset: one of the member's capped requests
                if form.is_valid() and (saved := _save(request, form, project)) is not None:
                    verb = "created" if project is None else "saved"
                    messages.success(request, f"Project '{saved.name}' {verb}. Press Start to train it.")
                    if warning := _seq_length_warning(form):
                        messages.warning(request, warning)
                    return redirect("projects:detail", pk=saved.pk)
        except Busy as busy:
            form.add_error(None, problem_error(Problem(busy.code, busy.message, busy.hint)))
            status, retry_after = 429, busy.retry_after
    else:
        initial = ProjectForm.initial_for(project)
        if project is None:
            initial.update(starting_values(request.GET))
        form = ProjectForm(initial=initial)
    if project is None:
        form.follow_name()
    output_value = form["output_directory"].value() or ""
    context: dict[str, Any] = {
        "form": form,
        "project": project,
        "sample_available": project is None and sample_available(),
        "groups": form.field_groups(),
        "dataset": _dataset_after_post(form, request.user),
        "eval_dataset": _dataset_after_post(form, request.user, "eval_dataset_report"),
        "model_fit_boxes": MODEL_FIT_BOXES,
        "box_status": _box_status(form),
        "output_check": output_status(output_value, request.user, project)
        if output_value and not form["output_directory"].errors
        else None,
    }
    response = render(request, "projects/form.html", context, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@require_http_methods(["GET"])
@login_required
def follow_output_dir(request: HtmxHttpRequest) -> HttpResponse:
    """A new form's output directory after its name changed: 204 (htmx leaves the box alone) once the member
    changed the box herself, else the box holding a free folder named after the project."""
    limit = ProjectForm.base_fields["output_directory"].max_length
    folder = followed_output_directory(
        request.GET.get("name", "")[:limit],
        request.GET.get("output_directory", "")[:limit],
        request.GET.get("output_suggested", "")[:limit],
    )
    if folder is None:
        return HttpResponse(status=204)
    form = ProjectForm(initial={"output_directory": folder, "output_suggested": folder})
    context = {"form": form, "output_check": output_status(folder, request.user)}
    return render(request, "projects/form.html#output-field", context)


@require_http_methods(["GET", "POST"])
@login_required
def project_new(request: HtmxHttpRequest) -> HttpResponse:
    return _form_page(request, None)


@require_http_methods(["GET", "POST"])
@login_required
def project_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    project = get_object_or_404(TrainingProject.objects.select_related("owner"), pk=pk)
    require_manage(request.user, project, "edit it")
    return _form_page(request, project)


def runs_context(project: TrainingProject, user: Any) -> dict[str, Any]:
    runs = list(project.runs.select_related("started_by").order_by("-created_at", "-id"))
    for run in runs:
        run.duration = run_duration(run)
        run.files_missing = records.files_missing(run, records.run_artifacts(run))
    live = [run for run in runs if run.is_live]
    # Resume is offered from the latest run's own checkpoint; an older run's is picked on that run's page.
    latest = runs[0] if runs and runs[0].status in RESUMABLE_STATUSES else None
    return {
        "project": project,
        "runs": runs,
        "live_run": live[0] if live else None,
        "resume_run": latest,
        "checkpoint": records.resumable_checkpoint(latest) if latest else None,
        "can_manage": can_manage(user, project),
    }


def _token_counts(project: TrainingProject, user: Any) -> dict[str, dict[str, Any]]:
    """The token counts a save or a check asked for, of the project's dataset and eval file with its saved
    settings: "Counting tokens…" (polled) until a worker has counted them."""
    values = project.hyperparameter_values
    found = {}
    for which, path in (("dataset", project.dataset_path), ("eval_dataset", project.eval_dataset_path)):
        count = path and saved_count(
            path,
            model_name=project.model_name,
            revision=project.revision,
            max_seq_length=values.max_seq_length,
            max_prompt_length=values.max_prompt_length,
            chat_template=template_key(values.chat_template),
        )
        if count:
            found[which] = counting(count, token_count_url(count, user))
    return found


@require_http_methods(["GET", "HEAD"])
@login_required
@vary_on_headers("HX-Request")
def project_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    project = get_object_or_404(TrainingProject.objects.select_related("owner"), pk=pk)
    context = runs_context(project, request.user)
    if wants_partial(request):
        # The runs card polls while a run is live; 286 stops it once none is.
        return polled_partial(request, "projects/detail.html#runs", context, live=context["live_run"] is not None)
    context["hyperparameters"] = hyperparameter_rows(project)
    context["token_counts"] = _token_counts(project, request.user)
    context["eval_source"] = eval_source(project)
    return render(request, "projects/detail.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def project_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    project = get_object_or_404(TrainingProject.objects.select_related("owner"), pk=pk)
    require_manage(request.user, project, "delete it")
    if request.method == "GET":
        live = project.runs.filter(status__in=LIVE_STATUSES).order_by("-created_at").first()
    else:
        try:
            delete_project(project, actor=Actor.of(request, Channel.PAGE))
        except ProjectBusy as refused:
            live = refused.run
        else:
            messages.success(
                request, f"Project '{project.name}' and its runs were deleted. Files in its output directory are kept."
            )
            return redirect("projects:list")
    status = 409 if request.method == "POST" else 200
    context = {"project": project, "live_run": live, "run_count": project.runs.count()}
    return render(request, "projects/delete.html", context, status=status)
