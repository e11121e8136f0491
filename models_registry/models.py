from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

DEFAULT_UPLOAD_QUOTA_BYTES = 10 * 1024**3


def validate_model_name_field(value: str) -> None:
    from models_registry.names import name_error

    problem = name_error(value)
    if problem:
        raise ValidationError(problem.message)


class ModelOverride(models.Model):
    """A staff-set local folder that answers for a model name before the HF cache is searched."""

    model_name = models.CharField(max_length=96, unique=True, validators=[validate_model_name_field])
    path = models.CharField(max_length=4096, help_text="Absolute path of the model folder on the server.")
    # 'device:inode' of the folder the path led to when saved (links followed; '': it led nowhere then): while it
    # still leads there, the folder it leads to is reserved too (projects.ownership.override_forms).
    path_identity = models.CharField(max_length=64, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    trust_remote_code = models.BooleanField(
        default=False,
        help_text="Allow the model's own Python code to run when it is loaded. Only for code you trust.",
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["model_name"]

    def __str__(self) -> str:
        return f"{self.model_name} → {self.path}"


class PortalSettings(models.Model):
    """The portal's "Directory Settings": one row, edited on the Settings page and in the admin."""

    model_cache_path = models.CharField(
        "Model Cache Path",
        max_length=4096,
        blank=True,
        help_text="Blank: the Hugging Face default (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub).",
    )
    allowed_output_roots = models.JSONField(default=list, blank=True)
    allowed_dataset_roots = models.JSONField(default=list, blank=True)
    upload_quota_bytes = models.BigIntegerField(
        "Upload quota per user (bytes)",
        default=DEFAULT_UPLOAD_QUOTA_BYTES,
        validators=[MinValueValidator(0)],
        help_text="The most bytes of uploaded datasets each user may keep. 0: no limit.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = "portal settings"
        verbose_name_plural = "portal settings"

    def __str__(self) -> str:
        return "Portal settings"

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> PortalSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class PublishedModel(models.Model):
    """A succeeded run's model published under a name: it resolves with source "portal" (after overrides and the
    cache). The facts are copied from the run's manifest at publishing, so they stay when the run is deleted;
    unpublishing deletes this row only, never the files."""

    model_name = models.CharField(max_length=96, unique=True, validators=[validate_model_name_field])
    path = models.CharField(max_length=4096, help_text="The run's model folder (a LoRA run's merged/ folder).")
    run = models.ForeignKey(
        "projects.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="published_models"
    )
    project_name = models.CharField(max_length=120, blank=True)
    method = models.CharField(max_length=8, blank=True)
    base_model = models.CharField(max_length=96, blank=True)
    base_revision = models.CharField(max_length=255, blank=True)
    dataset_sha256 = models.CharField(max_length=64, blank=True)
    note = models.TextField(blank=True)
    published_at = models.DateTimeField(default=timezone.now)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["model_name"]

    def __str__(self) -> str:
        return f"{self.model_name} (published)"


class ModelVerdict(models.Model):
    """transformers' own verdict on a model folder (models_registry.deep_verdict), cached per snapshot: it holds for
    as long as the folder's files (names, sizes, times, modes, blob names), the installed libraries and the check's
    limits give the same fingerprint. One row per folder; a new fingerprint replaces it."""

    folder_key = models.CharField(max_length=64, unique=True, help_text="sha256 of the folder's path.")
    folder = models.TextField()
    fingerprint = models.CharField(max_length=64)
    valid = models.BooleanField()
    result = models.JSONField(help_text="The DeepVerdict, as its model_dump(mode='json').")
    checked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["folder"]

    def __str__(self) -> str:
        return f"{self.folder}: {'valid' if self.valid else 'refused'}"


class VerdictRequest(models.Model):
    """A deep check asked of a worker for one folder and fingerprint (models_registry.deep_state), so a POST or the
    background fill asks once per snapshot while it is pending. The worker deletes it once the verdict is cached."""

    folder_key = models.CharField(max_length=64, unique=True, help_text="sha256 of the folder's path.")
    folder = models.TextField()
    fingerprint = models.CharField(max_length=64)
    requested_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.folder}: checking since {self.requested_at:%Y-%m-%d %H:%M}"
