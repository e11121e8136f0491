"""The portal's home page: where the models come from and what to do next."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from models_registry import lookup
from models_registry.demo import is_demo_model
from mtm.htmx import HtmxHttpRequest
from projects.runs.listing import recent_runs


@require_http_methods(["GET", "HEAD"])
@login_required
def home(request: HtmxHttpRequest) -> HttpResponse:
    cache_dir, cache_source = lookup.current_cache_dir()
    _, models = lookup.available_models()
    context = {
        "cache_dir": cache_dir,
        "cache_source": cache_source,
        "model_count": len(models),
        "valid_count": sum(1 for m in models if m.valid),
        "demo_only": bool(models) and all(is_demo_model(m.model_name) for m in models if m.valid),
        "demo_listed": any(is_demo_model(m.model_name) for m in models),
        "recent_runs": recent_runs(request.user),
    }
    return render(request, "home.html", context)
