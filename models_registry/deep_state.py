"""transformers' verdict as the pages, the API and Start see it: read from the cache, never computed in the web
process. A model not yet checked is "checking" and a check is asked of a worker once per snapshot (a VerdictRequest
row marks it pending); once the verdict is cached it overrides the instant rules where transformers can judge.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import current_app
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from models_registry.deep_verdict import DeepVerdict, deep_verdict, fingerprint, folder_key
from models_registry.models import ModelVerdict, VerdictRequest
from models_registry.resolution import Resolution
from mtm.shared.problems import Problem

log = logging.getLogger(__name__)
CHECK_TASK = "models_registry.check_model_deep"

# Instant refusals that only imitate what transformers does when it loads a model: where its own verdict says the
# model loads and trains, they become warnings. The others (an unsafe link, an interrupted download, a model or
# revision not there, remote code nobody trusted, a pickle payload, a file that is not a regular file) stand.
TRANSFORMERS_JUDGEABLE = frozenset(
    {
        "weights_invalid",
        "shard_missing",
        "lfs_pointer",
        "weights_missing_tensors",
        "config_weights_mismatch",
        "config_missing_model_type",
        "model_type_unknown",
        "tokenizer_invalid",
        "tokenizer_missing",
        "tokenizer_no_vocabulary",
        "tokenizer_unloadable",
    }
)
# The check itself could not reach a verdict (it crashed, hung or ran out of memory): the state is "failed".
CHECK_FAILURES = frozenset({"verdict_failed", "verdict_too_slow", "verdict_out_of_memory"})
# A request older than this is asked again (its worker may have died with it).
REQUEST_STALE_AFTER = timedelta(minutes=15)


@dataclass
class DeepState:
    """ "checking" (no verdict cached for this snapshot yet), "done", or "failed" (the check could not finish)."""

    state: str
    verdict: DeepVerdict | None = None

    @property
    def valid(self) -> bool | None:
        return None if self.verdict is None else self.verdict.valid

    @property
    def errors(self) -> list[Problem]:
        return [p.as_problem() for p in self.verdict.errors] if self.verdict else []

    @property
    def warnings(self) -> list[Problem]:
        return [p.as_problem() for p in self.verdict.warnings] if self.verdict else []

    @property
    def checked_at(self) -> datetime | None:
        return self.verdict.checked_at if self.verdict else None

    def to_dict(self) -> dict:
        return {
            "state": self.state,
            "valid": self.valid,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "checked_at": self.checked_at,
        }


def judgeable_only(resolution: Resolution) -> bool:
    """Whether every instant refusal of a found model is one transformers' verdict can overrule."""
    return resolution.path is not None and all(p.code in TRANSFORMERS_JUDGEABLE for p in resolution.errors)


def downgraded(resolution: Resolution, verdict: DeepVerdict) -> Resolution:
    """`resolution` with its judgeable refusals turned into warnings when transformers' verdict is valid."""
    if not verdict.valid:
        return resolution
    kept = [p for p in resolution.errors if p.code not in TRANSFORMERS_JUDGEABLE]
    moved = [
        Problem(p.code, f"transformers loads and trains this model all the same: {p.message}", p.hint)
        for p in resolution.errors
        if p.code in TRANSFORMERS_JUDGEABLE
    ]
    return dataclasses.replace(resolution, errors=kept, warnings=[*resolution.warnings, *moved])


def with_deep_verdict(resolution: Resolution, deep: DeepState | None) -> Resolution:
    """The resolution as the pages and the API report it: the instant answer, overridden by transformers' verdict
    once cached (judgeable refusals downgraded when it is valid; its refusals and warnings added)."""
    if deep is None or deep.verdict is None:
        return resolution
    shown = downgraded(resolution, deep.verdict)
    seen = {(p.code, p.message) for p in [*shown.errors, *shown.warnings]}
    errors = [p for p in deep.errors if (p.code, p.message) not in seen]
    warnings = [p for p in deep.warnings if (p.code, p.message) not in seen]
    return dataclasses.replace(shown, errors=[*shown.errors, *errors], warnings=[*shown.warnings, *warnings])


def deep_state(resolution: Resolution, *, ask: bool = True) -> DeepState | None:
    """transformers' verdict on a resolved model from the cache; "checking" when none holds for its snapshot (and,
    with `ask`, a check requested from a worker). None when transformers is not asked: no folder, or an instant
    refusal it cannot overrule."""
    if not judgeable_only(resolution):
        return None
    folder = str(resolution.path)
    stamp = fingerprint(folder, resolution.trust_remote_code)
    row = ModelVerdict.objects.filter(folder_key=folder_key(folder)).first()
    if row is not None and row.fingerprint == stamp:
        verdict = DeepVerdict.model_validate(row.result)
        failed = bool(verdict.errors) and verdict.errors[0].code in CHECK_FAILURES
        return DeepState("failed" if failed else "done", verdict)
    if ask:
        request_check(resolution, stamp)
    return DeepState("checking")


def request_check(resolution: Resolution, stamp: str) -> bool:
    """Ask a worker for the verdict on this snapshot, unless a request for it is pending. True when asked."""
    folder = str(resolution.path)
    key = folder_key(folder)
    now = timezone.now()
    values = {"folder": folder, "fingerprint": stamp, "requested_at": now}
    # One conditional UPDATE (or one INSERT on a unique key): two requests at once ask once.
    outdated = Q(folder_key=key) & (~Q(fingerprint=stamp) | Q(requested_at__lte=now - REQUEST_STALE_AFTER))
    if not VerdictRequest.objects.filter(outdated).update(**values):
        try:
            with transaction.atomic():
                VerdictRequest.objects.create(folder_key=key, **values)
        except IntegrityError:
            return False  # pending already
    args = (folder, resolution.trust_remote_code, resolution.model_name)
    transaction.on_commit(lambda: _enqueue(key, stamp, *args))
    return True


def _enqueue(key: str, stamp: str, folder: str, trust_remote_code: bool, model_name: str) -> None:
    try:  # by name: models_registry.tasks imports this module
        current_app.send_task(CHECK_TASK, (folder, trust_remote_code, model_name), retry=False)
    except Exception as exc:  # kombu raises OperationalError and friends, depending on the transport
        log.warning("broker unavailable for the check of %s: %s", folder, exc)
        VerdictRequest.objects.filter(folder_key=key, fingerprint=stamp).delete()  # the next look asks again


def finish_request(folder: str, stamp: str) -> None:
    """The worker has cached the verdict on this snapshot: its request is no longer pending."""
    VerdictRequest.objects.filter(folder_key=folder_key(folder), fingerprint=stamp).delete()


def cached_refusal(resolution: Resolution) -> Problem | None:
    """transformers' cached refusal of a resolved model, if there is one (nothing is computed or asked)."""
    deep = deep_state(resolution, ask=False)
    if deep is None or deep.verdict is None or deep.verdict.valid:
        return None
    return deep.verdict.first_error()


def overruled_on_worker(resolution: Resolution) -> Resolution:
    """For workers only (the resolve stage): a model the instant rules refuse only for what transformers can judge
    is judged by transformers now (computed, then cached); where it loads and trains, those refusals become
    warnings. Any other resolution comes back as it is."""
    if resolution.valid or not judgeable_only(resolution):
        return resolution
    return downgraded(resolution, deep_verdict(resolution))


def overruled_by_cache(resolution: Resolution) -> Resolution:
    """`resolution` with its judgeable refusals downgraded where transformers' cached verdict loads the model (for
    saving a project: nothing is computed or asked; a cached refusal is Start's to say)."""
    deep = deep_state(resolution, ask=False) if not resolution.valid else None
    return downgraded(resolution, deep.verdict) if deep is not None and deep.verdict is not None else resolution
