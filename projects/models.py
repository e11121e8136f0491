from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import models
from django.utils import timezone

from models_registry.models import validate_model_name_field
from projects.hyperparameters import Hyperparameters


class TrainingMethod(models.TextChoices):
    FULL = "full", "Full fine-tune"
    LORA = "lora", "LoRA"


class TrainingProject(models.Model):
    name = models.CharField(max_length=120)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="projects")
    description = models.TextField(blank=True)
    model_name = models.CharField("base model", max_length=96, validators=[validate_model_name_field])
    revision = models.CharField(max_length=255, blank=True)
    dataset_path = models.CharField(max_length=4096)
    dataset_format = models.CharField(max_length=32, blank=True)
    dataset_sha256 = models.CharField(max_length=64, blank=True)
    # A separate eval set (blank: none, or a seeded share of the dataset with the eval_fraction hyperparameter).
    eval_dataset_path = models.CharField("eval file", max_length=4096, blank=True)
    eval_dataset_sha256 = models.CharField(max_length=64, blank=True)
    output_directory = models.CharField(max_length=4096)
    # 'device:inode' of the output directory when it was saved ('': it did not exist yet, or saved before this was
    # recorded): a folder swapped since for another claims nothing (mtm.shared.claims).
    output_dir_identity = models.CharField(max_length=64, blank=True, editable=False)
    method = models.CharField(max_length=8, choices=TrainingMethod.choices, default=TrainingMethod.LORA)
    hyperparameters = models.JSONField(default=dict, blank=True)
    validation_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def last_run(self) -> TrainingRun | None:
        return self.runs.order_by("-created_at", "-id").first()

    @property
    def hyperparameter_values(self) -> Hyperparameters:
        """The hyperparameters the project trains with, typed: its stored values that are valid, defaults for the
        rest (the stored column is the JSON the service wrote)."""
        return Hyperparameters.from_stored(self.hyperparameters)

    @property
    def method_summary(self) -> str:
        """The method as the lists show it, with the objective when it is not plain SFT: "LoRA", "LoRA · DPO"."""
        dpo = self.hyperparameter_values.objective == "dpo"
        return f"{self.get_method_display()} · DPO" if dpo else self.get_method_display()


class RunStage(models.TextChoices):
    """The stages a run goes through; `stage_failed` names the one that failed."""

    QUEUE = "queue", "Queue"
    RESOLVE = "resolve", "Resolve"
    TRAIN = "train", "Train"
    VALIDATE = "validate", "Validate"


@dataclass(frozen=True)
class StatusTraits:
    live: bool  # a run in this status has not ended: it is waiting for or held by a worker
    badge: str  # the CSS class of its badge on the pages
    worker_stage: str = ""  # the stage a worker is running in this status (failed when the worker is lost)
    resumable: bool = False  # a run that ended so may leave checkpoints to resume from


class RunStatus(models.TextChoices):
    """Each status once, with what the pages, the pipeline and the reaper need to know of it."""

    live: bool
    badge: str
    worker_stage: str
    resumable: bool

    def __new__(cls, value: str, traits: StatusTraits) -> RunStatus:
        member = str.__new__(cls, value)
        member._value_ = value
        member.live, member.badge = traits.live, traits.badge
        member.worker_stage, member.resumable = traits.worker_stage, traits.resumable
        return member

    QUEUED = "queued", StatusTraits(live=True, badge="badge-live"), "Queued"
    RESOLVING = "resolving", StatusTraits(live=True, badge="badge-live", worker_stage=RunStage.RESOLVE), "Resolving"
    TRAINING = "training", StatusTraits(live=True, badge="badge-live", worker_stage=RunStage.TRAIN), "Training"
    VALIDATING = "validating", StatusTraits(live=True, badge="badge-live", worker_stage=RunStage.VALIDATE), "Validating"
    SUCCEEDED = "succeeded", StatusTraits(live=False, badge="badge-ok"), "Succeeded"
    FAILED = "failed", StatusTraits(live=False, badge="badge-error", resumable=True), "Failed"
    CANCELLED = "cancelled", StatusTraits(live=False, badge="badge-muted", resumable=True), "Cancelled"

    @classmethod
    def badge_of(cls, value: str) -> str:
        return cls(value).badge if value in cls.values else "badge-muted"


LIVE_STATUSES = tuple(status for status in RunStatus if status.live)
ENDED_STATUSES = tuple(status for status in RunStatus if not status.live)
RESUMABLE_STATUSES = tuple(status for status in RunStatus if status.resumable)


class TrainingRun(models.Model):
    project = models.ForeignKey(TrainingProject, on_delete=models.CASCADE, related_name="runs")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    stage_failed = models.CharField(max_length=16, choices=RunStage.choices, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_hint = models.TextField(blank=True)

    resolved_source = models.CharField(max_length=16, blank=True)
    resolved_path = models.CharField(max_length=4096, blank=True)
    resolved_revision = models.CharField(max_length=64, blank=True)

    resume = models.BooleanField(default=False)
    # The run whose checkpoint this one continues from (a run of the same project), and that checkpoint's folder.
    resume_source = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resumed_from = models.CharField(max_length=4096, blank=True)
    # What the run trains with, copied from the project at Start (projects.runs.config.RunConfig).
    config = models.JSONField(default=dict, blank=True)
    # The folder the run writes to: run-<id> inside the project's output directory, made by its train stage.
    run_folder = models.CharField(max_length=4096, blank=True)
    # 'device:inode' of the run folder the train stage created ('': not created yet, or trained before this was
    # recorded): whoever reads the run's files later reads them only from that very folder (projects.runs.folder).
    run_folder_identity = models.CharField(max_length=64, blank=True, editable=False)
    last_checkpoint = models.CharField(max_length=4096, blank=True)

    task_ids = models.JSONField(default=dict, blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    worker_pid = models.IntegerField(null=True, blank=True)
    device = models.CharField(max_length=255, blank=True)
    cancel_requested = models.BooleanField(default=False)

    progress = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(blank=True)
    validation = models.JSONField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)  # the trainer's final metrics (runs.columns.RunSummary)

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.project}"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def has_ended(self) -> bool:
        return self.status in ENDED_STATUSES


class Upload(models.Model):
    """A dataset file stored under MEDIA_ROOT/datasets/<uuid>/: only its owner (and staff) may train on it.
    Uploading the same bytes again reuses the owner's first copy; another member's identical file stays theirs."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="uploads")
    path = models.CharField(max_length=4096, unique=True)
    size_bytes = models.BigIntegerField()
    # The file's digest: the same owner uploading the same bytes again is given this copy (blank: stored before).
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    # 'device:inode' of the stored file ('': stored before this was recorded): see mtm.shared.claims.
    identity = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.path


class TokenCount(models.Model):
    """Token lengths of the part of a dataset file a check reads, counted by a worker for one tokenizer and
    settings (projects/datasets/token_stats.py); shared by every check of the same bytes with the same key."""

    class State(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        UNAVAILABLE = "unavailable"  # not counted this time (no tokenizer on the worker, the file changed): retried

    key = models.CharField(max_length=64, unique=True, help_text="sha256 of every field that decides the counts.")
    sample_sha256 = models.CharField(max_length=65, help_text="The file's sha256, or of its first part and '+'.")
    tokenizer = models.CharField(max_length=4400, help_text="The resolved model folder and revision.")
    model_name = models.CharField(max_length=200)
    revision = models.CharField(max_length=255, blank=True)
    max_seq_length = models.PositiveIntegerField(null=True, blank=True)
    max_prompt_length = models.PositiveIntegerField(null=True, blank=True)
    chat_template = models.CharField(max_length=40, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    result = models.JSONField(default=dict, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The member whose check last queued this count (a member's waiting counts are bounded).",
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Token count {self.sample_sha256[:12]} {self.state}"
