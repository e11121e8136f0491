from __future__ import annotations

from django.apps import AppConfig


class MtmConfig(AppConfig):
    name = "mtm"
    verbose_name = "Portal"

    def ready(self) -> None:
        # Loading the app here makes it the current one, so every @shared_task binds to it in web processes too.
        from mtm import celery  # noqa: F401
