"""Runs in the pages: Start (and Resume), the run page with its polled live region, and Cancel."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from models_registry.deep_state import deep_state
from models_registry.demo import DEMO_NOTE, is_demo_model
from models_registry.lookup import resolve_model
from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest, wants_partial
from mtm.shared.problems import Problem
from projects.access import can_manage, require_manage
from projects.models import LIVE_STATUSES, RunStatus, TrainingProject, TrainingRun
from projects.publishing.services import published_of
from projects.runs import records
from projects.runs.charts.dpo import dpo_charts
from projects.runs.columns import RunProgress, ValidationReport
from projects.runs.config import ConfigRow, RunConfig, changes_since, config_rows, previous_run, run_config
from projects.runs.display import before_after_loss_label, eval_set_text, run_duration, run_eta
from projects.runs.evaluation import eval_overview
from projects.runs.scheduling.placement import place_in_line
from projects.runs.services import RunRefused, cancel_run, start_run
from projects.runs.state_machine import CancelOutcome
from workers.models import Worker


def polled_partial(request: HtmxHttpRequest, template: str, context: dict[str, Any], *, live: bool) -> HttpResponse:
    """A polled region: 200 while there is more to come, 286 (htmx stops polling) with the final render."""
    content = render_to_string(template, context, request=request)
    return HttpResponse(content) if live else HttpResponseStopPolling(content)


def _problem_message(problem: Problem) -> str:
    hint = render_to_string("partials/_hint.html", {"hint": problem.hint}) if problem.hint else ""
    return format_html("<strong>{}</strong>{}", problem.message, hint)


@require_http_methods(["POST"])
@login_required
def run_start(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    project = get_object_or_404(TrainingProject.objects.select_related("owner"), pk=pk)
    require_manage(request.user, project, "start its runs")
    resume = request.POST.get("resume") in ("1", "true", "on")
    source = None
    if picked := request.POST.get("resume_from", "").strip():
        # Any run the member picks must be of this project: start_run refuses one of another project by name.
        source = TrainingRun.objects.filter(pk=int(picked)).first() if picked.isdigit() and len(picked) < 19 else None
        if source is None:
            messages.error(request, f"Cannot resume: there is no run {picked[:40]!r} to resume from.")
            return redirect("projects:detail", pk=project.pk)
    try:
        run = start_run(project, actor=Actor.of(request, Channel.PAGE), resume=resume, resume_from=source)
    except RunRefused as refused:
        messages.error(request, _problem_message(refused.problem))
        return redirect("projects:detail", pk=project.pk)
    return redirect("projects:run", pk=run.pk)


def run_context(run: TrainingRun, user: Any) -> dict[str, Any]:
    project = run.project
    # Resume is offered from this run's own checkpoint only; another run's is offered on that run's page.
    checkpoint = records.resumable_checkpoint(run)
    progress = RunProgress.read(run.progress)
    config = run_config(run)
    artifacts = records.run_artifacts(run, config)
    before = previous_run(run)
    return {
        "run": run,
        "project": project,
        "config": config,
        "config_rows": shown_config_rows(run, config),
        "device_before_report": device_before_report(run, config),
        "previous_run": before,
        "changes": changes_since(run, before) if before is not None else [],
        "artifacts": artifacts,
        "files_missing": records.files_missing(run, artifacts),
        "resumed_at": (resumed_at := records.checkpoint_step(run.resumed_from) if run.resume else None),
        "dpo_charts": dpo_charts(run.metrics, resumed_at),
        "progress": progress,
        "eta": run_eta(run, progress),
        "duration": run_duration(run),
        "validation": (validation := ValidationReport.read(run.validation)),
        "evaluation": (evaluation := eval_overview(run, config)),
        "eval_set": eval_set_text(evaluation.source, evaluation.split),
        "before_after_label": before_after_loss_label(
            evaluation.source, validation.before_after.eval_rows if validation and validation.before_after else None
        ),
        "checkpoint": checkpoint,
        "can_manage": can_manage(user, project),
        "place_in_line": place_in_line(run),
        "other_live_run": project.runs.filter(status__in=LIVE_STATUSES).exclude(pk=run.pk).first(),
        "checking_model": run.status == RunStatus.RESOLVING and model_being_checked(config),
        "demo_note": DEMO_NOTE if is_demo_model(config.model_name) else "",
        **result_context(run, config),
    }


RESOLVED_ROWS = ("resolved_revision", "resolved_path")


def shown_config_rows(run: TrainingRun, config: RunConfig) -> list[ConfigRow]:
    """The Configuration card's rows (in the polled region, so they follow the row): the resolved revision and
    folder say "not resolved yet" until the worker has resolved the model."""
    rows = config_rows(run, config)
    if run.is_live and not run.resolved_path:
        rows = [replace(row, value="not resolved yet") if row.key in RESOLVED_ROWS else row for row in rows]
    return rows


def device_before_report(run: TrainingRun, config: RunConfig) -> str:
    """While a taken run's trainer has not named its device yet: the device(s) of the worker that took it, as the
    trainer names them ("cpu", "cuda:0 (NVIDIA H100 …)"); "" when the trainer has named it or no worker has the run."""
    if run.device or not run.is_live or run.status == RunStatus.QUEUED:
        return ""
    name = getattr(getattr(run, "placement", None), "worker_name", "")
    worker = Worker.objects.filter(name=name).prefetch_related("devices").first() if name else None
    if worker is None:
        return ""
    devices = list(worker.devices.all())[: config.values.devices]
    return ", ".join(f"cuda:{d.index} ({d.name})" for d in devices) or "cpu"


def model_being_checked(config: Any) -> bool:
    """Whether the resolve stage is waiting for transformers' verdict on the run's model (none cached yet)."""
    deep = deep_state(resolve_model(config.model_name, config.revision or None), ask=False)
    return deep is not None and deep.state == "checking"


def result_context(run: TrainingRun, config: Any) -> dict[str, Any]:
    """What the run page offers to build on a succeeded run: its published names, Publish (a full model or a merged
    LoRA), and the adapter download (LoRA)."""
    if run.status != RunStatus.SUCCEEDED:
        return {}
    lora = config.method == "lora"
    return {
        "published": published_of(run),
        "publishable": not lora or bool(config.values.merge_after_training),
        "has_adapter": lora,
    }


@require_http_methods(["GET", "HEAD"])
@login_required
@vary_on_headers("HX-Request")
def run_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("project__owner", "started_by"), pk=pk)
    context = run_context(run, request.user)
    context["publish_name"] = request.GET.get("publish_name", "")[:200]  # a refused name, back in its box
    if wants_partial(request):
        return polled_partial(request, "projects/run.html#run-live", context, live=run.is_live)
    return render(request, "projects/run.html", context)


@require_http_methods(["POST"])
@login_required
def run_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("project__owner"), pk=pk)
    require_manage(request.user, run.project, "cancel its runs")
    outcome = cancel_run(run, actor=Actor.of(request, Channel.PAGE))
    if outcome is CancelOutcome.CANCELLED:
        messages.success(request, f"Run {run.pk} cancelled before training started.")
    elif outcome is CancelOutcome.REQUESTED:
        messages.info(
            request,
            f"Cancelling run {run.pk}: training stops at its next step, saving a checkpoint if it has trained one.",
        )
    else:
        messages.info(request, f"Run {run.pk} had already ended ({run.get_status_display()}); nothing to cancel.")
    return redirect("projects:run", pk=run.pk)
