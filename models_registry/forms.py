"""Forms of the registry pages and admin: the model-name check box and the Directory Settings."""

from __future__ import annotations

import os

from django import forms

from models_registry.byte_sizes import SizeError, format_size, parse_size
from models_registry.models import ModelOverride, PortalSettings
from models_registry.override_services import OverrideRefused, check_override
from models_registry.settings_checks import path_problem, split_lines
from models_registry.settings_services import MAX_UPLOAD_QUOTA
from workers.models import SchedulingSettings

PATH_PROBLEMS = {"not_absolute": "path", "invalid_path": "path", "not_a_directory": "path"}
ROOTS_HELP = "One absolute path a line. Blank: the server's default ({default})."


class ModelCheckForm(forms.Form):
    """The "Check a model name" box; the project form reuses the same two field names."""

    model_name = forms.CharField(
        label="Model name",
        max_length=200,
        help_text="A Hugging Face repo id, e.g. meta-llama/Llama-3.2-3B-Instruct.",
    )
    revision = forms.CharField(label="Revision", required=False, max_length=255, help_text="Blank: main.")


class PortalSettingsForm(forms.ModelForm):
    """The portal's "Directory Settings". Roots are edited one a line and stored as a list."""

    allowed_output_roots = forms.CharField(
        label="Allowed output roots", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    allowed_dataset_roots = forms.CharField(
        label="Allowed dataset roots", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    # Typed and shown as a size ("10 GiB"); stored in bytes, as the API gives and takes it.
    upload_quota_bytes = forms.CharField(
        label="Upload quota per user",
        required=False,
        max_length=40,
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )
    # Stored with the workers' scheduling (the fair share keeps the same limit); box, label and bounds from there.
    live_runs_per_member = SchedulingSettings._meta.get_field("live_runs_per_member").formfield(required=False)

    class Meta:
        model = PortalSettings
        fields = [
            "model_cache_path",
            "allowed_output_roots",
            "allowed_dataset_roots",
            "upload_quota_bytes",
        ]
        widgets = {"model_cache_path": forms.TextInput(attrs={"placeholder": "Blank: the Hugging Face default"})}

    def __init__(self, *args, **kwargs) -> None:
        from django.conf import settings

        super().__init__(*args, **kwargs)
        for name, default in (
            ("allowed_output_roots", settings.MTM_OUTPUT_ROOTS),
            ("allowed_dataset_roots", settings.MTM_DATASET_ROOTS),
        ):
            self.initial[name] = "\n".join(getattr(self.instance, name) or [])
            self.fields[name].help_text = ROOTS_HELP.format(default=", ".join(default) or "none")
        quota = self.instance.upload_quota_bytes
        self.initial["upload_quota_bytes"] = format_size(quota)
        self.fields["upload_quota_bytes"].help_text = (
            "The most uploaded datasets each user may keep, as a size: e.g. 10 GiB or 500 MB (GiB, MiB: powers of "
            f"1024; GB, MB: of 1000; a plain number is bytes). 0: no limit. Now: {format_size(quota)}"
            + (f" ({quota:,} bytes)." if quota else " (no limit).")
        )
        self.initial["live_runs_per_member"] = SchedulingSettings.load().live_runs_per_member

    def clean_upload_quota_bytes(self) -> int:
        """A size ("10 GiB") in bytes. Blank (or a form that does not send the box) keeps the current quota."""
        value = (self.cleaned_data.get("upload_quota_bytes") or "").strip()
        if not value:
            return self.instance.upload_quota_bytes
        try:
            size = parse_size(value)
        except SizeError as error:
            raise forms.ValidationError(f"Upload quota: {error}") from None
        if size > MAX_UPLOAD_QUOTA:
            raise forms.ValidationError(
                f"Upload quota: {value[:40]} is more than the largest quota, {format_size(MAX_UPLOAD_QUOTA)}."
            )
        return size

    def clean_live_runs_per_member(self) -> int:
        """Blank (or a form that does not send the box) keeps the current cap."""
        value = self.cleaned_data.get("live_runs_per_member")
        return self.initial["live_runs_per_member"] if value is None else value

    def clean_model_cache_path(self) -> str:
        value = (self.cleaned_data.get("model_cache_path") or "").strip()
        if value and (problem := path_problem(value, "Model Cache Path")):
            raise forms.ValidationError(f"{problem.message} {problem.hint}")
        return value

    def _clean_roots(self, name: str, kind: str) -> list[str]:
        roots = list(dict.fromkeys(os.path.normpath(line) for line in split_lines(self.cleaned_data.get(name) or "")))
        errors = []
        for number, root in enumerate(roots, start=1):
            if problem := path_problem(root, f"Line {number}: allowed {kind} root"):
                errors.append(forms.ValidationError(f"{problem.message} {problem.hint}"))
        if errors:
            raise forms.ValidationError(errors)
        return roots

    def clean_allowed_output_roots(self) -> list[str]:
        return self._clean_roots("allowed_output_roots", "output")

    def clean_allowed_dataset_roots(self) -> list[str]:
        return self._clean_roots("allowed_dataset_roots", "dataset")


class ModelOverrideAdminForm(forms.ModelForm):
    """Refuses override paths that can never work; the validity column reports the rest."""

    class Meta:
        model = ModelOverride
        fields = ["model_name", "path", "enabled", "trust_remote_code", "note"]

    def clean_path(self) -> str:
        value = (self.cleaned_data.get("path") or "").strip()
        if problem := path_problem(value, "Override path"):
            raise forms.ValidationError(f"{problem.message} {problem.hint}")
        return value

    def clean(self) -> dict:
        """The checks the override service makes on save, shown under the field they concern."""
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            check_override({**cleaned, "path": cleaned.get("path", "")}, exclude_pk=self.instance.pk)
        except OverrideRefused as refused:
            for problem in refused.problems:
                self.add_error(PATH_PROBLEMS.get(problem.code, "model_name"), f"{problem.message} {problem.hint}")
        return cleaned
