from __future__ import annotations

from django.apps import AppConfig


class MtmConfig(AppConfig):
    name = "mtm"
    verbose_name = "Portal"
