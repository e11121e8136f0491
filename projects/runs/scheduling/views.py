"""The GPUs page: every host, its workers and devices, who runs what where, and the runs waiting in line."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest
from projects.models import LIVE_STATUSES, RunStatus, TrainingRun
from projects.runs.scheduling.placement import waiting_runs
from workers.devices import physical_index
from workers.holds import held_by_device, held_by_worker
from workers.models import MAX_LIVE_RUNS_PER_MEMBER, SchedulingSettings, Worker
from workers.queues import TRAINING_RUNS, worker_duties
from workers.services import DrainRefused, set_drained, set_live_run_limit


def worker_role(worker: Worker) -> str:
    """What the worker does, from the queues it consumes (workers.queues.QUEUE_DUTIES), as one sentence."""
    duties = worker_duties(list(worker.queues or [])) or ["consumes no queue the portal sends work to"]
    if TRAINING_RUNS not in duties:
        duties.append("takes no training run")
    sentence = "; ".join(duties)
    return sentence[0].upper() + sentence[1:] + "."


def fleet() -> tuple[list[dict[str, Any]], list[Worker]]:
    """Hosts, each with its workers (live first, then the recently gone), their devices and the run each holds; and
    the workers gone longer than MTM_WORKER_FORGET_SECONDS, folded away (most recently seen first)."""
    holding = defaultdict(list)
    taken = (
        TrainingRun.objects.filter(status__in=LIVE_STATUSES)
        .exclude(status=RunStatus.QUEUED)
        .exclude(placement__worker_name="")
        .select_related("project", "project__owner", "started_by", "placement")
    )
    for run in taken:
        holding[run.placement.worker_name].append(run)
    on_device, by_worker = held_by_device(), held_by_worker()
    hosts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    folded = []
    for worker in Worker.objects.prefetch_related("devices"):
        if worker.long_gone and not holding[worker.name]:
            folded.append(worker)
            continue
        devices = list(worker.devices.all())
        for device in devices:  # the playground models on this physical device, whichever worker loaded them
            device.playground = on_device.get(
                (worker.host, physical_index(worker.cuda_visible_devices, device.index)), []
            )
        hosts[worker.host].append(
            {
                "worker": worker,
                "role": worker_role(worker),
                "devices": devices,
                "runs": holding[worker.name],
                "loaded": by_worker[worker.name],
            }
        )
    for workers in hosts.values():
        workers.sort(key=lambda row: (row["worker"].is_gone, row["worker"].name))
    folded.sort(key=lambda w: w.last_seen, reverse=True)
    return [{"host": host, "workers": hosts[host]} for host in sorted(hosts)], folded


@require_http_methods(["GET", "HEAD"])
@login_required
def gpus(request: HtmxHttpRequest) -> HttpResponse:
    hosts, folded = fleet()
    context = {
        "hosts": hosts,
        "folded": folded,
        "forget_hours": settings.MTM_WORKER_FORGET_SECONDS / 3600,
        "waiting": waiting_runs(),
        "scheduling": SchedulingSettings.load(),
        "max_live_runs": MAX_LIVE_RUNS_PER_MEMBER,
    }
    return render(request, "workers/gpus.html", context)


@require_http_methods(["POST"])
@login_required
def live_run_limit(request: HtmxHttpRequest) -> HttpResponse:
    raw = request.POST.get("live_runs_per_member", "").strip()
    try:
        set_live_run_limit(int(raw), actor=Actor.of(request, Channel.PAGE))
    except ValueError:
        messages.error(
            request,
            f"Live runs per member: '{raw[:40]}' is not a whole number from 0 (no limit) to {MAX_LIVE_RUNS_PER_MEMBER}.",
        )
    else:
        messages.success(request, "The per-member run limit is saved.")
    return redirect("workers:gpus")


@require_http_methods(["POST"])
@login_required
def drain(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    worker = get_object_or_404(Worker, pk=pk)
    drained = request.POST.get("drained") != "0"
    try:
        set_drained(worker, drained, actor=Actor.of(request, Channel.PAGE))
    except DrainRefused as refused:
        messages.error(request, f"{refused.problem.message} {refused.problem.hint}")
    else:
        if drained:
            messages.success(request, f"{worker.name} is drained: it finishes its run and takes no new one.")
        else:
            messages.success(request, f"{worker.name} takes runs again.")
    return redirect("workers:gpus")
