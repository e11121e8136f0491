"""Admin for published models: publish a succeeded run under a name, or unpublish, through projects.publishing.services
(the same checks and audit record as the pages and the API). A published model is never edited in place."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from models_registry.models import PublishedModel
from mtm.audit import Actor, Channel
from projects.models import TrainingRun
from projects.publishing.services import PublishRefused, check_publish, publish_run, unpublish


class PublishForm(forms.ModelForm):
    run = forms.ModelChoiceField(TrainingRun.objects.select_related("project__owner"), widget=forms.NumberInput)

    class Meta:
        model = PublishedModel
        fields = ("model_name", "run", "note")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        run, name = data.get("run"), data.get("model_name")
        if run is not None and name:
            try:
                check_publish(run, name, actor=Actor.of(self.request, Channel.ADMIN), note=data.get("note", ""))
            except PublishRefused as refused:
                for problem in refused.problems:
                    self.add_error(None, f"{problem.message} {problem.hint}".strip())
        return data

    def validate_unique(self) -> None:  # the service says when a name is taken, in its own words
        pass


@admin.register(PublishedModel)
class PublishedModelAdmin(admin.ModelAdmin):
    list_display = ("model_name", "run", "base_model", "method", "published_at", "published_by")
    search_fields = ("model_name", "base_model", "project_name", "note")
    list_select_related = ("run", "published_by")
    readonly_fields = (
        "model_name",
        "run",
        "path",
        "project_name",
        "method",
        "base_model",
        "base_revision",
        "dataset_sha256",
        "note",
        "published_at",
        "published_by",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: PublishedModel | None = None) -> tuple[str, ...]:
        return self.readonly_fields if obj is not None else ()

    def get_form(self, request: HttpRequest, obj: PublishedModel | None = None, change: bool = False, **kwargs: Any):
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        kwargs.update(
            form=type("BoundPublishForm", (PublishForm,), {"request": request}), fields=PublishForm.Meta.fields
        )
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: PublishedModel | None = None):
        return self.readonly_fields if obj is not None else PublishForm.Meta.fields

    def has_change_permission(self, request: HttpRequest, obj: PublishedModel | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: PublishedModel, form, change: bool) -> None:
        data = form.cleaned_data
        try:
            published = publish_run(
                data["run"], data["model_name"], actor=Actor.of(request, Channel.ADMIN), note=data.get("note", "")
            )
        except PublishRefused as refused:  # taken between the form's check and the save
            self.message_user(request, refused.problems[0].message, messages.ERROR)
            return
        obj.pk = published.pk
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: PublishedModel) -> None:
        unpublish(obj, actor=Actor.of(request, Channel.ADMIN))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PublishedModel]) -> None:
        for obj in queryset:
            unpublish(obj, actor=Actor.of(request, Channel.ADMIN))
