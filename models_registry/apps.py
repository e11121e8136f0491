from __future__ import annotations

from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    name = "models_registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from models_registry.worker_report import report_part
        from workers.reporting import register_part

        register_part(report_part)  # each worker's row says which cache it reads and which models it holds
