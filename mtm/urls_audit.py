from __future__ import annotations

from django.urls import path

from mtm import views_audit

app_name = "audit"

urlpatterns = [
    path("", views_audit.audit_list, name="list"),
]
