"""The resolver and checks as the portal uses them: settings and overrides come from the ORM."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings as django_settings

from models_registry.models import ModelOverride, PortalSettings
from models_registry.resolution import Resolution, hf_cache_dir, resolve


def portal_settings() -> PortalSettings:
    return PortalSettings.load()


def current_cache_dir() -> tuple[Path, str]:
    return hf_cache_dir(portal_settings().model_cache_path)


def output_roots() -> list[str]:
    return list(portal_settings().allowed_output_roots or django_settings.MTM_OUTPUT_ROOTS)


def dataset_roots() -> list[str]:
    return list(portal_settings().allowed_dataset_roots or django_settings.MTM_DATASET_ROOTS)


def resolve_model(name: str, revision: str | None = None) -> Resolution:
    """Enabled override first, then the HF cache; format checked; an explicit failure otherwise."""
    cache_dir, _ = current_cache_dir()
    override = None
    if isinstance(name, str) and len(name) <= 96:
        override = ModelOverride.objects.filter(model_name=name, enabled=True).first()
    return resolve(
        name,
        revision,
        cache_dir=cache_dir,
        override_path=override.path if override else None,
        trust_remote_code=bool(override and override.trust_remote_code),
    )
