"""transformers' verdict as the pages, the API and Start see it: read from the cache, never computed in the web
process. A model not yet checked is "checking"; a check is asked of a worker once per snapshot (a VerdictRequest row
marks it pending) by a POST or by the background fill (models_registry.verdict_fill), never by a GET. Once the
verdict is cached it overrides the instant rules where transformers can judge, and its refusals come first.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Literal

from celery import current_app
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from pydantic import BaseModel, Field, computed_field

from models_registry.bounded_json import CHECKED_ON_WORKER
from models_registry.deep_verdict import DeepVerdict, deep_verdict, fingerprint, folder_key
from models_registry.listed import ListedModel
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


class DeepState(BaseModel):
    """transformers' verdict on a resolved model as the pages and the API show it (model_dump)."""

    state: Literal["checking", "done", "failed"] = Field(
        description='"checking": no verdict for this snapshot yet (a worker check is queued; ask again); "done": '
        'transformers has judged it; "failed": the check could not finish (it hung, ran out of memory or crashed).'
    )
    verdict: DeepVerdict | None = Field(None, exclude=True)

    @computed_field(description="Whether transformers loads and can train it; null while checking.")
    @property
    def valid(self) -> bool | None:
        return None if self.verdict is None else self.verdict.valid

    @computed_field
    @property
    def errors(self) -> list[Problem]:
        return self.verdict.errors if self.verdict else []

    @computed_field
    @property
    def warnings(self) -> list[Problem]:
        return self.verdict.warnings if self.verdict else []

    @computed_field
    @property
    def checked_at(self) -> datetime | None:
        return self.verdict.checked_at if self.verdict else None


def judgeable_only(found: Resolution | ListedModel) -> bool:
    """Whether transformers is asked about a found or listed model: it has a folder, and every instant refusal is one
    transformers' verdict can overrule."""
    return found.path is not None and all(p.code in TRANSFORMERS_JUDGEABLE for p in found.errors)


def downgraded(resolution: Resolution, verdict: DeepVerdict) -> Resolution:
    """`resolution` with its judgeable refusals turned into warnings when transformers' verdict is valid."""
    if not verdict.valid:
        return resolution
    errors, warnings = merged_problems(resolution.errors, resolution.warnings, True, [], [])
    return resolution.model_copy(update={"errors": errors, "warnings": warnings})


def merged_problems(
    errors: list[Problem],
    warnings: list[Problem],
    valid: bool,
    their_errors: list[Problem],
    their_warnings: list[Problem],
) -> tuple[list[Problem], list[Problem]]:
    """Instant errors and warnings overridden by transformers' verdict (`valid`, its errors and warnings): when it
    loads the model, the refusals it can judge become warnings; when it refuses, its reasons come first. Its own
    warnings are added; nothing twice. The instant rules' notes that a file was left to transformers are answered by
    the verdict, and dropped."""
    warnings = [p for p in warnings if p.code != CHECKED_ON_WORKER]
    if valid:
        moved = [
            Problem(p.code, f"transformers loads and trains this model all the same: {p.message}", p.hint)
            for p in errors
            if p.code in TRANSFORMERS_JUDGEABLE
        ]
        errors = [p for p in errors if p.code not in TRANSFORMERS_JUDGEABLE]
        warnings = [*warnings, *moved]
    said = {(p.code, p.message) for p in their_errors}
    errors = [*their_errors, *(p for p in errors if (p.code, p.message) not in said)]
    seen = {(p.code, p.message) for p in [*errors, *warnings]}
    return errors, [*warnings, *(p for p in their_warnings if (p.code, p.message) not in seen)]


def _merged(resolution: Resolution, verdict: DeepVerdict) -> Resolution:
    errors, warnings = merged_problems(
        resolution.errors,
        resolution.warnings,
        verdict.valid,
        verdict.errors,
        verdict.warnings,
    )
    return resolution.model_copy(update={"errors": errors, "warnings": warnings})


def with_deep_verdict(resolution: Resolution, deep: DeepState | None) -> Resolution:
    """The resolution as the pages and the API report it: the instant answer, overridden by transformers' verdict
    once cached (merged_problems)."""
    if deep is None or deep.verdict is None:
        return resolution
    return _merged(resolution, deep.verdict)


def is_check_failure(verdict: DeepVerdict) -> bool:
    return bool(verdict.errors) and verdict.errors[0].code in CHECK_FAILURES


def deep_state(resolution: Resolution, *, ask: bool = False) -> DeepState | None:
    """transformers' verdict on a resolved model from the cache; "checking" when none holds for its snapshot (and,
    with `ask`, which only a POST or a worker may pass, a check requested from a worker). None when transformers is
    not asked: no folder, or an instant refusal it cannot overrule."""
    if not judgeable_only(resolution):
        return None
    folder = str(resolution.path)
    stamp = fingerprint(folder, resolution.trust_remote_code)
    row = ModelVerdict.objects.filter(folder_key=folder_key(folder)).first()
    if row is not None and row.fingerprint == stamp:
        verdict = DeepVerdict.model_validate(row.result)
        return DeepState(state="failed" if is_check_failure(verdict) else "done", verdict=verdict)
    if ask:
        request_check(resolution, stamp)
    return DeepState(state="checking")


def request_check(resolution: Resolution, stamp: str) -> bool:
    """Ask a worker for the verdict on this snapshot, unless a request for it is pending. True when asked."""
    return ask_worker(str(resolution.path), resolution.trust_remote_code, resolution.model_name, stamp)


def pending_requests() -> int:
    """Checks asked and not yet answered (a request older than REQUEST_STALE_AFTER no longer counts)."""
    return VerdictRequest.objects.filter(requested_at__gt=timezone.now() - REQUEST_STALE_AFTER).count()


def ask_worker(folder: str, trust_remote_code: bool, model_name: str, stamp: str, *, refill: bool = False) -> bool:
    """Ask a worker for the verdict on `folder` at fingerprint `stamp`, unless a request for it is pending. True when
    asked. Safe to call from many processes at once: each snapshot is asked once. `refill`: the background fill
    asks, and the check sends the fill again once no check is pending."""
    key = folder_key(folder)
    now = timezone.now()
    fresh = Q(folder_key=key, fingerprint=stamp, requested_at__gt=now - REQUEST_STALE_AFTER)
    if VerdictRequest.objects.filter(fresh).exists():  # pending: a read, not a write
        return False
    values = {"folder": folder, "fingerprint": stamp, "requested_at": now}
    # One conditional UPDATE (or one INSERT on a unique key): two requests at once ask once.
    outdated = Q(folder_key=key) & (~Q(fingerprint=stamp) | Q(requested_at__lte=now - REQUEST_STALE_AFTER))
    if not VerdictRequest.objects.filter(outdated).update(**values):
        try:
            with transaction.atomic():
                VerdictRequest.objects.create(folder_key=key, **values)
        except IntegrityError:
            return False  # pending already
    args = (folder, trust_remote_code, model_name)
    transaction.on_commit(lambda: _enqueue(key, stamp, args, {"refill": True} if refill else {}))
    return True


def _enqueue(key: str, stamp: str, args: tuple, kwargs: dict) -> None:
    try:  # by name: models_registry.tasks imports this module
        current_app.send_task(CHECK_TASK, args, kwargs, retry=False)
    except Exception as exc:  # kombu raises OperationalError and friends, depending on the transport
        log.warning("broker unavailable for the check of %s: %s", args[0], exc)
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
    """For workers only (the resolve stage): a found model that the instant rules accept, or refuse only for what
    transformers can judge, is judged by transformers now (computed, then cached). Where it loads and trains, those
    refusals become warnings; where it refuses, its reasons come first, before any the instant rules give. Any other
    resolution comes back as it is."""
    if not judgeable_only(resolution):
        return resolution
    return _merged(resolution, deep_verdict(resolution))


def overruled_by_cache(resolution: Resolution) -> Resolution:
    """`resolution` with its judgeable refusals downgraded where transformers' cached verdict loads the model (for
    saving a project: nothing is computed or asked; a cached refusal is Start's to say)."""
    deep = deep_state(resolution, ask=False) if not resolution.valid else None
    return downgraded(resolution, deep.verdict) if deep is not None and deep.verdict is not None else resolution
