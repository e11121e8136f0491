from __future__ import annotations

from django.urls import path

from projects.runs.scheduling import estimate_views, views

app_name = "workers"

urlpatterns = [
    path("", views.gpus, name="gpus"),
    path("workers/<int:pk>/drain/", views.drain, name="drain"),
    path("live-run-limit/", views.live_run_limit, name="live-run-limit"),
    path("estimate/", estimate_views.memory_estimate, name="estimate"),
]
