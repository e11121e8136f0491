from __future__ import annotations

from django.apps import AppConfig


class WorkersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workers"
    verbose_name = "Workers and GPUs"

    def ready(self) -> None:
        # Celery signals: a worker process reports itself while it runs (see workers.reporting).
        from workers import reporting  # noqa: F401
