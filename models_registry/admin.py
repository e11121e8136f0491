"""Admin for the registry: Model Overrides with a live validity column, and the single Portal Settings row."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from models_registry.edits import override_validation
from models_registry.forms import ModelOverrideAdminForm, PortalSettingsForm
from models_registry.models import ModelOverride, PortalSettings
from models_registry.views import AUDITED_SETTINGS_FIELDS, save_portal_settings
from mtm import audit

OVERRIDE_FIELDS = ("model_name", "path", "enabled", "trust_remote_code", "note")


def _override_values(obj: ModelOverride) -> dict:
    return {name: getattr(obj, name) for name in OVERRIDE_FIELDS}


@admin.register(ModelOverride)
class ModelOverrideAdmin(admin.ModelAdmin):
    form = ModelOverrideAdminForm
    list_display = ("model_name", "path", "enabled", "validity", "updated_at", "updated_by")
    list_filter = ("enabled", "trust_remote_code")
    search_fields = ("model_name", "path", "note")
    list_select_related = ("updated_by",)
    readonly_fields = ("created_at", "created_by", "updated_at", "updated_by")
    actions = ["revalidate"]
    fieldsets = (
        (None, {"fields": ("model_name", "path", "enabled", "note")}),
        ("Security", {"fields": ("trust_remote_code",)}),
        ("History", {"fields": ("created_at", "created_by", "updated_at", "updated_by")}),
    )

    @admin.display(description="Validity")
    def validity(self, obj: ModelOverride) -> str:
        resolution = override_validation(obj)
        if resolution.valid:
            warned = f" ({len(resolution.warnings)} warning{'s' if len(resolution.warnings) != 1 else ''})"
            return format_html('<span style="color:#167a3e">✔ valid</span>{}', warned if resolution.warnings else "")
        return format_html('<span style="color:#b3261e">✘ {}</span>', resolution.errors[0].message)

    @admin.action(description="Re-validate selected overrides")
    def revalidate(self, request: HttpRequest, queryset: QuerySet[ModelOverride]) -> None:
        for obj in queryset:
            resolution = override_validation(obj)
            if resolution.valid:
                note = (
                    f"; {len(resolution.warnings)} warning(s): {resolution.warnings[0].message}"
                    if resolution.warnings
                    else ""
                )
                self.message_user(request, f"{obj.model_name}: valid ({obj.path}){note}", messages.SUCCESS)
            else:
                problem = resolution.errors[0]
                self.message_user(request, f"{obj.model_name}: {problem.message} {problem.hint}", messages.ERROR)

    def save_model(self, request: HttpRequest, obj: ModelOverride, form, change: bool) -> None:
        before = _override_values(ModelOverride.objects.get(pk=obj.pk)) if change else {}
        if not change:
            obj.created_by = request.user
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
        changes = audit.diff(before, _override_values(obj))
        if changes or not change:
            action = "model_override.update" if change else "model_override.create"
            audit.record(request.user, action, obj, changes, request, via="admin")

    def _audit_delete(self, request: HttpRequest, obj: ModelOverride) -> None:
        changes = {name: [value, None] for name, value in _override_values(obj).items()}
        audit.record(request.user, "model_override.delete", obj, changes, request, via="admin")

    def delete_model(self, request: HttpRequest, obj: ModelOverride) -> None:
        with transaction.atomic():
            self._audit_delete(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelOverride]) -> None:
        with transaction.atomic():
            for obj in queryset:
                self._audit_delete(request, obj)
            super().delete_queryset(request, queryset)


@admin.register(PortalSettings)
class PortalSettingsAdmin(admin.ModelAdmin):
    form = PortalSettingsForm
    list_display = ("__str__", "model_cache_path", "updated_at", "updated_by")
    readonly_fields = ("updated_at", "updated_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not PortalSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: PortalSettings | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: PortalSettings, form, change: bool) -> None:
        current = PortalSettings.objects.filter(pk=1).first()
        before = {name: getattr(current, name) if current else None for name in AUDITED_SETTINGS_FIELDS}
        save_portal_settings(request, form, before, via="admin")
