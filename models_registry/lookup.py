"""The resolver and checks as the portal uses them: settings and overrides come from the ORM."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings as django_settings

from models_registry.deep_listing import with_deep_states
from models_registry.models import ModelOverride, PortalSettings, PublishedModel
from models_registry.names import name_error
from models_registry.published import provenance, unpublished_problem
from models_registry.published_folder import published_folder_problem
from models_registry.resolution import Resolution, hf_cache_dir, resolve
from models_registry.shown_names import shown


def portal_settings() -> PortalSettings:
    return PortalSettings.load()


def current_cache_dir() -> tuple[Path, str]:
    return hf_cache_dir(portal_settings().model_cache_path)


def output_roots() -> list[str]:
    return list(portal_settings().allowed_output_roots or django_settings.MTM_OUTPUT_ROOTS)


def dataset_roots() -> list[str]:
    return list(portal_settings().allowed_dataset_roots or django_settings.MTM_DATASET_ROOTS)


def resolve_model(name: str, revision: str | None = None) -> Resolution:
    """Enabled override first, then a model published from a run, then the HF cache; format checked; an explicit
    failure otherwise. A published model says what it is (`provenance`), and a cache repo of its name is a warning
    (`cache_copy_ignored`); a name unpublished since says so."""
    cache_dir, _ = current_cache_dir()
    override = published = None
    if name_error(name) is None:  # a hostile name never reaches a query (PostgreSQL refuses NUL bytes)
        override = ModelOverride.objects.filter(model_name=name, enabled=True).first()
        if override is None:
            published = PublishedModel.objects.filter(model_name=name).select_related("published_by", "run").first()
    result = resolve(
        name,
        revision,
        cache_dir=cache_dir,
        override_path=override.path if override else None,
        trust_remote_code=bool(override and override.trust_remote_code),
        published_path=published.path if published else None,
        published_problem=published_folder_problem(published) if published else None,
    )
    if published is not None:
        result.provenance = provenance(published)
    elif override is None and result.source is None and [e.code for e in result.errors] == ["model_not_found"]:
        result.errors[0] = unpublished_problem(name) or result.errors[0]
    return result


def available_models(query: str | None = None, valid: bool | None = None) -> tuple[Path, list]:
    from models_registry.listing import list_models, listing_store

    cache_dir, _ = current_cache_dir()
    overrides = ModelOverride.objects.filter(enabled=True).values_list("model_name", "path", "trust_remote_code")
    published = PublishedModel.objects.values_list("model_name", "path")
    models = list_models(cache_dir, overrides, store=listing_store(), published=published)
    models = shown(models)  # a cache folder named with bytes that are not UTF-8 still lists, readably
    changed = {p.model_name: problem for p in _published_rows() if (problem := published_folder_problem(p))}
    for item in models:
        if item.source == "portal" and item.model_name in changed:
            item.errors = [changed[item.model_name]]
    if query:
        needle = query.strip().lower()
        models = [m for m in models if needle in m.model_name.lower()]
    models = with_deep_states(models)  # transformers' cached verdicts: two queries for the whole list
    if valid is not None:
        models = [m for m in models if m.valid == valid]
    return cache_dir, models


def _published_rows() -> list[PublishedModel]:
    return list(PublishedModel.objects.select_related("run"))


def validate_output_dir(raw: object):
    from models_registry.outputs import check_output_dir

    return check_output_dir(raw, output_roots(), django_settings.MTM_LOW_DISK_BYTES)
