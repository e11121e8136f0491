from __future__ import annotations

import dataclasses
import logging

from celery import shared_task
from django.conf import settings

from models_registry.deep_state import CHECK_TASK, finish_request, pending_requests
from models_registry.deep_verdict import verdict_for_folder
from models_registry.lookup import resolve_model as resolve_model_now
from models_registry.verdict_fill import fill_verdicts

FILL_TASK = "models_registry.fill_verdicts"
log = logging.getLogger(__name__)


@shared_task(name="models_registry.resolve_model", ignore_result=False)
def resolve_model(model_name: str, revision: str | None = None) -> dict:
    """Resolve on a worker (the worker's filesystem is the one that trains). Returns the validate-model dict."""
    return resolve_model_now(model_name, revision).model_dump(mode="json")


@shared_task(name=CHECK_TASK, ignore_result=False)
def check_model_deep(path: str, trust_remote_code: bool = False, model_name: str = "", refill: bool = False) -> dict:
    """On the checks queue (its workers' libraries are the trainer's): fill the verdict cache for a resolved model
    folder (transformers' own check, in a limited child) and clear its pending request. `refill` (a check the
    background fill asked for): once no check is pending, send the fill for the next batch. Returns {"valid",
    "fingerprint", "errors"} for a caller that waits; pages read the cache instead."""
    verdict = verdict_for_folder(path, trust_remote_code=trust_remote_code, model_name=model_name)
    finish_request(path, verdict.fingerprint)
    if refill and pending_requests() == 0:
        _send_fill()
    return {
        "valid": verdict.valid,
        "fingerprint": verdict.fingerprint,
        "errors": [p.model_dump() for p in verdict.errors],
    }


@shared_task(name=FILL_TASK, ignore_result=False)
def fill_model_verdicts() -> dict:
    """Periodic (Celery beat) and after each batch, on the checks queue (it reads every listed folder): ask for the
    checks the listed models lack, a batch at a time."""
    return dataclasses.asdict(fill_verdicts())


def _send_fill() -> None:
    try:
        fill_model_verdicts.apply_async(expires=settings.MTM_VERDICT_FILL_SECONDS, retry=False)
    except Exception as exc:  # the broker is away: beat sends the fill again within MTM_VERDICT_FILL_SECONDS
        log.warning("broker unavailable for the background fill of verdicts: %s", exc)
