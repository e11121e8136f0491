"""The training workers as they report themselves, their devices, and where each run was sent."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone

from workers.queues import INFERENCE_QUEUE, run_queues


class Worker(models.Model):
    """One Celery worker (a row per node name), rewritten by the worker itself every MTM_WORKER_REPORT_SECONDS."""

    name = models.CharField(max_length=255, unique=True)  # the Celery node name, e.g. gpu0@host
    host = models.CharField(max_length=255)
    pid = models.IntegerField(null=True, blank=True)
    queues = models.JSONField(default=list, blank=True)  # the queues it was started to consume
    cuda_visible_devices = models.CharField(max_length=255, blank=True)
    cpu_threads = models.IntegerField(default=0)
    # The processes a CPU worker may run one run on (runworker --cpu --processes N): its "devices" for DDP runs.
    cpu_processes = models.PositiveIntegerField(default=1)
    ram_bytes = models.BigIntegerField(default=0)
    versions = models.JSONField(default=dict, blank=True)  # python, torch, transformers, cuda
    hf_cache = models.CharField(max_length=4096, blank=True)
    held_models = models.JSONField(
        null=True, blank=True
    )  # names of the valid models in its cache; None: not reported yet
    # When the models in held_models were listed (the report's heartbeat, last_seen, is written before the listing).
    held_models_at = models.DateTimeField(null=True, blank=True)
    drained = models.BooleanField(default=False)  # staff asked it to take no new run
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_gone(self) -> bool:
        """Stopped, or silent for longer than MTM_WORKER_GONE_SECONDS."""
        if self.stopped_at is not None:
            return True
        return self.last_seen < timezone.now() - timedelta(seconds=settings.MTM_WORKER_GONE_SECONDS)

    @property
    def long_gone(self) -> bool:
        """Gone and silent for longer than MTM_WORKER_FORGET_SECONDS: the GPUs page folds it away."""
        forget = timezone.now() - timedelta(seconds=settings.MTM_WORKER_FORGET_SECONDS)
        return self.is_gone and self.last_seen < forget

    @property
    def device_count(self) -> int:
        """The devices one run may span on this worker: its GPUs, or the processes of a CPU worker."""
        return len(self.devices.all()) or max(1, self.cpu_processes)

    @property
    def run_queues(self) -> list[str]:
        """The queues it consumes that bring training runs (workers.queues.run_queues)."""
        return run_queues(self.name, list(self.queues or []), settings.CELERY_TASK_DEFAULT_QUEUE)

    @property
    def trains(self) -> bool:
        """It consumes a queue that brings runs: a training worker, not the checks worker (the default queue only)
        nor a playground worker. Only a training worker can be drained."""
        return bool(self.run_queues)

    @property
    def answers_playground(self) -> bool:
        return INFERENCE_QUEUE in self.queues

    @property
    def runs_checks(self) -> bool:
        """It consumes the default queue: model checks, token counts and the periodic jobs."""
        return settings.CELERY_TASK_DEFAULT_QUEUE in self.queues


class Device(models.Model):
    """An accelerator a worker sees (after CUDA_VISIBLE_DEVICES); index is the worker's own numbering."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="devices")
    index = models.IntegerField()
    name = models.CharField(max_length=255)
    total_bytes = models.BigIntegerField(default=0)
    free_bytes = models.BigIntegerField(null=True, blank=True)
    bf16 = models.BooleanField(default=False)

    class Meta:
        ordering = ["worker", "index"]
        constraints = [models.UniqueConstraint(fields=["worker", "index"], name="one_device_per_index")]

    def __str__(self) -> str:
        return f"{self.worker.name} #{self.index} {self.name}"

    @property
    def used_bytes(self) -> int | None:
        return None if self.free_bytes is None else self.total_bytes - self.free_bytes


class RunPlacement(models.Model):
    """Where a run was sent (its queue, in line with the others sent there) and which worker took it."""

    run = models.OneToOneField("projects.TrainingRun", on_delete=models.CASCADE, related_name="placement")
    queue = models.CharField(max_length=255)
    waiting_for = models.CharField(max_length=255, blank=True)  # "a free training worker", "a GPU with ≥ 38 GiB"
    worker_name = models.CharField(max_length=255, blank=True)  # the node that took it
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"run {self.run_id} → {self.queue}"


MAX_LIVE_RUNS_PER_MEMBER = 10_000


def default_live_runs_per_member() -> int:
    """The limit a new scheduling row starts with: MTM_LIVE_RUNS_PER_MEMBER."""
    return settings.MTM_LIVE_RUNS_PER_MEMBER


class SchedulingSettings(models.Model):
    """One row: how many live runs one member may have. Start refuses a run beyond it
    (projects.runs.scheduling.live_run_cap), and a worker leaves a member's queued run waiting while as many of hers are
    taken (projects.runs.scheduling.fair_share), as runs queued before staff lowered it are. Staff set it on the
    Settings page, the GPUs page, the API and the admin."""

    live_runs_per_member = models.PositiveIntegerField(
        "Live runs per member",
        default=default_live_runs_per_member,
        validators=[MaxValueValidator(MAX_LIVE_RUNS_PER_MEMBER)],
        help_text="Runs one member may have queued, resolving, training or validating at once; Start is refused "
        "beyond it (staff included), and a worker takes no more of hers while that many run. 0: no limit. A new "
        "portal starts with MTM_LIVE_RUNS_PER_MEMBER.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return "Scheduling settings"

    @classmethod
    def load(cls) -> SchedulingSettings:
        return cls.objects.get_or_create(pk=1)[0]
