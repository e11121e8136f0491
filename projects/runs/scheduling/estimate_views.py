"""The project form's memory pre-flight, checked as the form changes: the estimate's breakdown, the live devices it
fits on, and when it fits none the largest device and remedies, each with its new estimate."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from models_registry.names import name_error
from mtm.htmx import HtmxHttpRequest
from projects.hyperparameters import HYPERPARAMETERS, Hyperparameters
from projects.models import TrainingMethod, TrainingProject
from projects.runs.scheduling.fit import fits_for, live_training_workers, read_shape
from projects.runs.scheduling.memory_estimate import estimate, remedies, setup_for

MAX_PARAM_CHARS = 200


def typed_hyperparameters(params: Any) -> tuple[Hyperparameters, list]:
    """The form's boxes as the model takes them: a blank box keeps its default, an unticked checkbox (sent as
    nothing) is off."""
    values: dict[str, Any] = {}
    for name, declared in HYPERPARAMETERS.items():
        raw = params.get(name, "").strip()[:MAX_PARAM_CHARS]
        if raw or declared.kind == "bool":
            values[name] = raw
    return Hyperparameters.from_dict(values)


def estimate_context(params: Any) -> dict[str, Any]:
    model_name = params.get("model_name", "").strip()[:MAX_PARAM_CHARS]
    method = params.get("method", TrainingMethod.LORA)
    if method not in TrainingMethod.values:
        method = TrainingMethod.LORA
    if not model_name or name_error(model_name):
        return {"note": "The memory estimate is shown once the base model above is a valid model name."}
    hp, problems = typed_hyperparameters(params)
    if problems:
        return {"note": f"The memory estimate is shown once the hyperparameters above are valid: {problems[0].message}"}
    project = TrainingProject(
        model_name=model_name,
        revision=params.get("revision", "").strip()[:MAX_PARAM_CHARS],
        method=method,
        hyperparameters=hp.to_dict(),
    )
    shape, unreadable = read_shape(project)
    if shape is None and unreadable:
        return {"note": f"No memory estimate: {unreadable} Re-download the model or ask staff to check its folder."}
    if shape is None:
        return {"note": f"The memory estimate is shown once '{model_name}' resolves here with safetensors weights."}
    fits = fits_for(project, shape, live_training_workers())
    gpu = [f for f in fits if f.on_gpu]
    shown = gpu or fits
    if shown:
        largest = max(shown, key=lambda f: f.room_bytes)
        need = largest.estimate
    else:  # no worker reports: the estimate for one bf16 GPU
        largest, need = None, estimate(shape, setup_for(method, hp, on_gpu=True))
    fitting = [f for f in shown if f.fits]
    roomy = [f for f in shown if f.holds_model and f.fits_memory]
    return {
        "devices": hp.devices,  # the estimate is per device: every rank holds a whole copy
        "too_few_devices": roomy if roomy and not fitting and not any(f.enough_devices for f in roomy) else [],
        "estimate": need,
        "fitting": fitting,
        "largest": largest,
        "remedies": remedies(shape, need) if shown and not fitting else [],
        "no_worker": not fits,
        "holders": [f.worker.name for f in fits if f.holds_model],
        "lacking": [f.worker.name for f in fits if not f.holds_model],
    }


@require_http_methods(["GET"])
@login_required
def memory_estimate(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "workers/_estimate.html", estimate_context(request.GET))
