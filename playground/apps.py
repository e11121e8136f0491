from __future__ import annotations

from django.apps import AppConfig


class PlaygroundConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "playground"
    verbose_name = "Playground"

    def ready(self) -> None:
        from playground import (
            memory,
            worker_signals,  # noqa: F401  (an inference worker forgets its loaded models at start)
        )
        from workers import holds

        holds.register(memory.loaded_by_device, memory.loaded_by_worker)  # counted by scheduling and the GPUs page
