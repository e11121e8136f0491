"""Conversations with a model (a succeeded run's result or a registry model), their turns, and the models an
inference worker holds loaded."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class TargetKind(models.TextChoices):
    RUN = "run", "Run"
    MODEL = "model", "Registry model"


def target_of(kind: str, run_id: int | None, model_name: str, revision: str) -> str:
    """What a conversation talks to, as one string: answers with equal targets need the same model loaded."""
    if kind == TargetKind.RUN:
        return f"run:{run_id}"
    return f"model:{model_name}@{revision}"


class Conversation(models.Model):
    """One member's chat with one model. Only its owner sees it (others get a 404)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    kind = models.CharField(max_length=8, choices=TargetKind.choices)
    run = models.ForeignKey("projects.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model_name = models.CharField(max_length=96, blank=True)  # the registry name, or the run's base model
    revision = models.CharField(max_length=255, blank=True)
    system_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return f"Conversation {self.pk} with {self.target_label}"

    @property
    def target_label(self) -> str:
        if self.kind == TargetKind.RUN:
            return f"run {self.run_id}" + (f" ({self.model_name} fine-tuned)" if self.model_name else "")
        return self.model_name + (f"@{self.revision}" if self.revision else "")

    @property
    def target(self) -> str:
        return target_of(self.kind, self.run_id, self.model_name, self.revision)


class GenerationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


LIVE_GENERATION = (GenerationStatus.QUEUED, GenerationStatus.RUNNING)


class Generation(models.Model):
    """One turn: the member's message and the model's answer, written by the worker as it is generated."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message = models.TextField()
    params = models.JSONField(default=dict)  # playground.params.GenerationParams
    status = models.CharField(
        max_length=12, choices=GenerationStatus.choices, default=GenerationStatus.QUEUED, db_index=True
    )
    reply = models.TextField(blank=True)
    prompt_tokens = models.IntegerField(null=True, blank=True)
    new_tokens = models.IntegerField(default=0)
    finish_reason = models.CharField(max_length=16, blank=True)  # "stop", "length", "context", "stop_string"
    # The oldest earlier turns of the conversation the prompt left out to fit the model's context (playground.context_window).
    left_out_turns = models.PositiveIntegerField(default=0)
    cold = models.BooleanField(null=True, blank=True)  # the model was loaded for this turn
    load_seconds = models.FloatField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_hint = models.TextField(blank=True)
    worker_name = models.CharField(max_length=255, blank=True)
    device = models.CharField(max_length=255, blank=True)
    # How often a worker took a later answer in the turn order ahead of this one to save a model load (playground.turns).
    passed_over = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Generation {self.pk} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_GENERATION

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from the member's message to the first token (the queue and any model load included)."""
        if self.first_token_at is None:
            return None
        return max(0.0, (self.first_token_at - self.created_at).total_seconds())

    @property
    def tokens_per_second(self) -> float | None:
        """New tokens after the first, per second since the first (the decode rate the member sees)."""
        end = self.finished_at or self.heartbeat_at
        if self.first_token_at is None or end is None or self.new_tokens < 2:
            return None
        seconds = (end - self.first_token_at).total_seconds()
        return (self.new_tokens - 1) / seconds if seconds > 0 else None


class LoadedModel(models.Model):
    """A model an inference worker holds in memory for the playground, and on which device: it counts against that
    device's memory on the GPUs page and in placement until the worker unloads it (idle) or is gone."""

    worker_name = models.CharField(max_length=255, db_index=True)
    key = models.CharField(max_length=4096)  # what was loaded (folders)
    target = models.CharField(max_length=512, blank=True)  # the conversation target it was loaded for (target_of)
    label = models.CharField(max_length=255)
    device = models.CharField(max_length=64)  # "cpu" or "cuda:N" in the worker's numbering
    device_index = models.IntegerField(null=True, blank=True)
    bytes = models.BigIntegerField(default=0)
    loaded_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["worker_name", "loaded_at"]

    def __str__(self) -> str:
        return f"{self.label} on {self.worker_name} ({self.device})"


class PlaygroundSend(models.Model):
    """One message a member sent, kept apart from the conversation (deleting it leaves this row): the per-member rate
    limit counts these, and `served_at` (when a worker took the answer) tells which waiting member was served least
    recently, and `caused_load` (the worker had to load a model for the answer) which member's answers cost loads. The
    periodic reaper removes rows older than SEND_RECORD_HOURS."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sent_at = models.DateTimeField(default=timezone.now)
    generation = models.OneToOneField(
        Generation, null=True, blank=True, on_delete=models.SET_NULL, related_name="send_record"
    )
    served_at = models.DateTimeField(null=True, blank=True)
    caused_load = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["owner", "sent_at"]), models.Index(fields=["owner", "served_at"])]

    def __str__(self) -> str:
        return f"Playground send by {self.owner_id} at {self.sent_at:%H:%M:%S}"


SEND_RECORD_HOURS = 24
