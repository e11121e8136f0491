"""The background fill: transformers' verdict on every listed model, asked of the workers a few at a time.

Runs on a worker (Celery beat sends it every MTM_VERDICT_FILL_SECONDS, and the last check of a batch sends it
again). It lists the models as the list does, fingerprints each judgeable folder (the worker's filesystem is the one
that trains) and asks for a check of each one whose cached verdict is missing or no longer holds, until
MTM_VERDICT_FILL_BATCH checks are pending. Each check is one task that a worker runs one at a time, so a fill never
queues thousands of checks ahead of other work. Asking goes through the VerdictRequest rows (one per folder, unique):
two fills at once never ask twice for the same snapshot.

The model list asks too (ask_for_listed, from a POST the page sends when it loads): for the models it shows that no
worker has checked or been asked about, keeping at most MTM_VERDICT_FILL_BATCH of them being checked, so a new model
is checked while someone looks at it rather than at the next fill.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from models_registry import lookup
from models_registry.deep_listing import still_checking, unchecked
from models_registry.deep_state import ask_worker, judgeable_only, pending_requests
from models_registry.deep_verdict import fingerprint, folder_key
from models_registry.listed import ListedModel
from models_registry.models import ModelVerdict


@dataclass
class FillReport:
    """What one pass did: `asked` checks queued, `current` folders whose verdict holds, `pending` checks already
    waiting when it started, `left` folders without a current verdict not asked this pass (asked already, or
    beyond the batch)."""

    asked: int = 0
    current: int = 0
    pending: int = 0
    left: int = 0


def fill_verdicts(batch: int | None = None) -> FillReport:
    """Ask the workers for the verdicts the listed models lack, keeping at most `batch` (MTM_VERDICT_FILL_BATCH)
    checks pending. For workers only: fingerprinting reads every listed folder."""
    batch = settings.MTM_VERDICT_FILL_BATCH if batch is None else batch
    report = FillReport(pending=pending_requests())
    room = batch - report.pending
    if batch <= 0:
        return report
    _, listed = lookup.available_models()
    candidates = [m for m in listed if judgeable_only(m)]
    keys = [folder_key(m.path) for m in candidates]
    held = dict(ModelVerdict.objects.filter(folder_key__in=keys).values_list("folder_key", "fingerprint"))
    for model, key in zip(candidates, keys, strict=True):
        stamp = fingerprint(model.path, model.trust_remote_code)
        if held.get(key) == stamp:
            report.current += 1
        elif room > 0 and ask_worker(model.path, model.trust_remote_code, model.model_name, stamp, refill=True):
            report.asked += 1
            room -= 1
        else:
            report.left += 1
    return report


def listed_to_ask(models: list[ListedModel], batch: int | None = None) -> list[ListedModel]:
    """The listed models (as the list shows them, with their deep states) that the list asks about now: those with no
    verdict and no pending request, as many as keep at most `batch` (MTM_VERDICT_FILL_BATCH; 0: none) of the listed
    models being checked."""
    batch = settings.MTM_VERDICT_FILL_BATCH if batch is None else batch
    return unchecked(models)[: max(0, batch - still_checking(models))]


def ask_for_listed(models: list[ListedModel], batch: int | None = None) -> int:
    """Ask the workers for the checks of listed_to_ask(models, batch); how many were asked. Fingerprints only the
    folders it asks about, so a POST of the list reads at most `batch` folders."""
    asked = 0
    for model in listed_to_ask(models, batch):
        stamp = fingerprint(model.path, model.trust_remote_code)
        asked += ask_worker(model.path, model.trust_remote_code, model.model_name, stamp)
    return asked
