"""Admin for the registry: Model Overrides with a live validity column, and the single Portal Settings row."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from models_registry.edits import override_validation
from models_registry.forms import ModelOverrideAdminForm, PortalSettingsForm
from models_registry.models import ModelOverride, PortalSettings
from models_registry.override_services import (
    OVERRIDE_FIELDS,
    create_override,
    delete_override,
    update_override,
)
from models_registry.settings_services import update_settings
from mtm.audit import Actor, Channel


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
        # The form has run the service's checks (ModelOverrideAdminForm.clean); the service saves and audits.
        values = {name: form.cleaned_data[name] for name in OVERRIDE_FIELDS if name in form.cleaned_data}
        if change:
            update_override(obj, values, actor=Actor.of(request, Channel.ADMIN))
        else:
            created = create_override(values, actor=Actor.of(request, Channel.ADMIN))
            obj.pk, obj.created_at, obj.created_by, obj.updated_by = (
                created.pk,
                created.created_at,
                created.created_by,
                created.updated_by,
            )
            obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: ModelOverride) -> None:
        delete_override(obj, actor=Actor.of(request, Channel.ADMIN))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelOverride]) -> None:
        for obj in queryset:
            delete_override(obj, actor=Actor.of(request, Channel.ADMIN))


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
        update_settings(form.cleaned_data, actor=Actor.of(request, Channel.ADMIN))
