from __future__ import annotations

from celery import shared_task

from models_registry.services import resolve_model as resolve_model_now


@shared_task(name="models_registry.resolve_model", ignore_result=False)
def resolve_model(model_name: str, revision: str | None = None) -> dict:
    """Resolve on a worker (the worker's filesystem is the one that trains). Returns the validate-model dict."""
    return resolve_model_now(model_name, revision).to_dict()
