from __future__ import annotations

from celery import shared_task

from models_registry.deep_state import CHECK_TASK, finish_request
from models_registry.deep_verdict import verdict_for_folder
from models_registry.services import resolve_model as resolve_model_now


@shared_task(name="models_registry.resolve_model", ignore_result=False)
def resolve_model(model_name: str, revision: str | None = None) -> dict:
    """Resolve on a worker (the worker's filesystem is the one that trains). Returns the validate-model dict."""
    return resolve_model_now(model_name, revision).to_dict()


@shared_task(name=CHECK_TASK, ignore_result=False)
def check_model_deep(path: str, trust_remote_code: bool = False, model_name: str = "") -> dict:
    """On the default queue (any worker; its libraries are the trainer's): fill the verdict cache for a resolved model
    folder (transformers' own check, in a limited child) and clear its pending request. Returns
    {"valid", "fingerprint", "errors"} for a caller that waits; pages read the cache instead."""
    verdict = verdict_for_folder(path, trust_remote_code=trust_remote_code, model_name=model_name)
    finish_request(path, verdict.fingerprint)
    return {
        "valid": verdict.valid,
        "fingerprint": verdict.fingerprint,
        "errors": [p.model_dump() for p in verdict.errors],
    }
