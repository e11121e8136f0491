"""Building on a run's result in the pages: publish its model under a name, unpublish it, download its adapter."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from models_registry.models import PublishedModel
from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest
from mtm.request_limits import limited_view
from mtm.shared.problems import Problem
from projects.access import can_view
from projects.models import TrainingRun
from projects.publishing.adapter_archive import AdapterUnavailable, adapter_archive
from projects.publishing.services import PublishRefused, publish_run, unpublish
from projects.runs.views import _problem_message

MAX_NAME_CHARS = 200
PUBLISH_TAG = "publish"  # a message that belongs beside the Publish box, not at the top of the page


@require_http_methods(["POST"])
@login_required
def run_publish(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("project__owner"), pk=pk)
    name = request.POST.get("model_name", "")[:MAX_NAME_CHARS]
    try:
        published = publish_run(
            run, name, actor=Actor.of(request, Channel.PAGE), note=request.POST.get("note", "")[:2000]
        )
    except PublishRefused as refused:
        if refused.status == 403:
            raise PermissionDenied(refused.problems[0].message) from None
        for problem in refused.problems:  # shown under the Publish box (PUBLISH_TAG), which the page scrolls to
            messages.error(request, _problem_message(problem), extra_tags=PUBLISH_TAG)
        query = urlencode({"publish_name": name})
        return redirect(f"{reverse('projects:run', kwargs={'pk': run.pk})}?{query}#build-on")
    messages.success(
        request, f"Published run {run.pk}'s model as '{published.model_name}': any project may now train on it."
    )
    return redirect("registry:model-detail", name=published.model_name)


@require_http_methods(["POST"])
@login_required
def published_unpublish(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    published = get_object_or_404(PublishedModel.objects.select_related("run__project__owner"), pk=pk)
    try:
        unpublish(published, actor=Actor.of(request, Channel.PAGE))
    except PublishRefused as refused:
        raise PermissionDenied(refused.problems[0].message) from None
    messages.success(request, f"Unpublished '{published.model_name}'. Its files are still on disk at {published.path}.")
    return redirect("registry:models")


def _busy_download(request: HtmxHttpRequest, problem: Problem) -> HttpResponse:
    return HttpResponse(f"{problem.message}\n{problem.hint}\n", content_type="text/plain; charset=utf-8")


@require_http_methods(["GET"])
@login_required
@limited_view(_busy_download)  # the slot is held while the archive streams
def run_adapter(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("project__owner"), pk=pk)
    if not can_view(request.user, run.project):
        raise PermissionDenied("Only signed-in, active members may download adapters.")
    try:
        return adapter_archive(run).response()
    except AdapterUnavailable as exc:
        raise Http404(exc.problem.message) from None
