from __future__ import annotations

from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "projects"
    verbose_name = "Training projects"

    def ready(self) -> None:
        from models_registry.published_folder import register_folder_check
        from projects.runs.folder import published_model_problem

        register_folder_check(published_model_problem)  # the resolver asks it of every published name
