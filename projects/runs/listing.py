"""Runs at a glance: the Runs page (every run, newest first, filtered by status, owner or project), a member's
recent runs for the home page, and the full trainer log of a run as a download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods

from mtm.htmx import HtmxHttpRequest
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.charts.compare import compare_chart_svg
from projects.runs.columns import RunProgress, read_metrics
from projects.runs.compare import CompareRefused, compare
from projects.runs.records import work_folder

PAGE_SIZE = 50
RECENT = 5


def _with_summary(runs: list[TrainingRun]) -> list[TrainingRun]:
    """Each run with its progress percent and final (last logged) loss, for a table row."""
    for run in runs:
        progress = RunProgress.read(run.progress)
        run.percent = progress.percent
        losses = [point.loss for point in read_metrics(run.metrics) if point.loss is not None]
        run.final_loss = losses[-1] if losses else progress.loss
    return runs


def _runs() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("project", "project__owner", "started_by").order_by("-created_at", "-id")


def recent_runs(user: Any) -> list[TrainingRun]:
    """The runs `user` started most recently."""
    return _with_summary(list(_runs().filter(started_by=user)[:RECENT]))


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


@require_http_methods(["GET", "HEAD"])
@login_required
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    owner = request.GET.get("owner", "")
    project_id = _int(request.GET.get("project"))
    runs = _runs()
    if status in RunStatus.values:
        runs = runs.filter(status=status)
    if owner:
        runs = runs.filter(started_by__username=owner)
    if project_id is not None:
        runs = runs.filter(project_id=project_id)
    page = Paginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "runs": _with_summary(list(page.object_list)),
        "statuses": RunStatus.choices,
        "owners": get_user_model().objects.filter(pk__in=TrainingRun.objects.values("started_by")).order_by("username"),
        "projects": TrainingProject.objects.order_by("name").only("pk", "name"),
        "status": status if status in RunStatus.values else "",
        "owner": owner,
        "project_id": project_id,
    }
    return render(request, "projects/runs.html", context)


@require_http_methods(["GET", "HEAD"])
@login_required
def run_compare(request: HtmxHttpRequest) -> HttpResponse:
    """2 to 5 runs side by side; the selection is the query (?runs=12&runs=15 or ?runs=12,15), so the page is a link
    to share."""
    try:
        comparison = compare(request.user, request.GET.getlist("runs"))
    except CompareRefused as refused:
        return render(request, "projects/compare.html", {"problem": refused.problem}, status=refused.status)
    # compare_chart_svg escapes every text it writes; the numbers are formatted by it.
    chart = compare_chart_svg([(item.label, item.run.metrics) for item in comparison.runs])
    return render(request, "projects/compare.html", {"comparison": comparison, "chart": mark_safe(chart)})  # noqa: S308


def log_path(run: TrainingRun) -> Path:
    return work_folder(run.pk) / "trainer.log"


@require_http_methods(["GET", "HEAD"])
@login_required
def run_log(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The whole trainer log of a run (the page shows only its tail)."""
    run = get_object_or_404(TrainingRun, pk=pk)
    path = log_path(run)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - FileResponse closes it
    except FileNotFoundError:
        raise Http404(f"Run {run.pk} has no log file: it never reached training, or its log was removed.") from None
    return FileResponse(handle, as_attachment=True, filename=f"run-{run.pk}-trainer.log", content_type="text/plain")
