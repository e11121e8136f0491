from __future__ import annotations

from django.urls import path

from models_registry import views

app_name = "registry"

urlpatterns = [
    path("models/", views.model_list, name="models"),
    # Before the detail route: "validate-field" has no "/", so it is never a model name.
    path("models/validate-field/", views.validate_field, name="validate-field"),
    path("models/verdict-status/", views.verdict_status, name="verdict-status"),
    path("models/ask-checks/", views.ask_list_checks, name="models-ask"),
    path("models/<path:name>/", views.model_detail, name="model-detail"),
    path("settings/", views.settings_page, name="settings"),
    path("settings/validate-path/", views.validate_path, name="validate-path"),
]
