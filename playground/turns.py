"""Which waiting answer an inference worker takes next.

The turn order: the member whose last answer was taken longest ago (never is longest) first, then that member's oldest
answer. A worker departs from it only to save model loads, which every member waits for:
1. it takes answers for the model it holds loaded ahead of answers that need a load;
2. of answers that need a load, it takes those of members whose answers caused fewer loads in the last
   MTM_PLAYGROUND_LOAD_WINDOW_SECONDS first (a member switching models pays for her switches, not the others).
Neither rule passes over one answer more than MTM_PLAYGROUND_MAX_PASS_OVERS times: an answer passed over that often
is taken in its turn, ahead of any preference (0 keeps the plain turn order). Each time a worker takes an answer, every
answer ahead of it in the turn order counts one pass-over."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, OuterRef, Subquery
from django.utils import timezone

from playground.models import Generation, GenerationStatus, LoadedModel, PlaygroundSend, target_of


@dataclass(frozen=True)
class Waiting:
    """A queued answer as the choice sees it."""

    pk: int
    owner_id: int
    target: str
    passed_over: int


@dataclass(frozen=True)
class Choice:
    """The answer to take, and the answers ahead of it in the turn order (passed over when it is taken)."""

    pk: int
    passed_over: list[int]


def turn_order() -> list[Waiting]:
    """The queued answers in the plain turn order."""
    last_served = (
        PlaygroundSend.objects.filter(owner=OuterRef("owner"), served_at__isnull=False)
        .order_by("-served_at")
        .values("served_at")[:1]
    )
    rows = (
        Generation.objects.filter(status=GenerationStatus.QUEUED)
        .annotate(owner_served_at=Subquery(last_served))
        .order_by(F("owner_served_at").asc(nulls_first=True), "created_at", "pk")
        .values_list(
            "pk",
            "owner_id",
            "passed_over",
            "conversation__kind",
            "conversation__run_id",
            "conversation__model_name",
            "conversation__revision",
        )
    )
    return [Waiting(pk, owner, target_of(*target), passed) for pk, owner, passed, *target in rows]


def loaded_target(worker_name: str) -> str | None:
    """The target of the model `worker_name` holds loaded, None when it holds none."""
    return LoadedModel.objects.filter(worker_name=worker_name[:255]).values_list("target", flat=True).first() or None


def loads_caused(owner_ids: set[int]) -> dict[int, int]:
    """How many answers of each member needed a model load in the last MTM_PLAYGROUND_LOAD_WINDOW_SECONDS."""
    since = timezone.now() - timedelta(seconds=settings.MTM_PLAYGROUND_LOAD_WINDOW_SECONDS)
    counted = (
        PlaygroundSend.objects.filter(owner_id__in=owner_ids, caused_load=True, served_at__gte=since)
        .values("owner_id")
        .annotate(loads=Count("pk"))
    )
    return {row["owner_id"]: row["loads"] for row in counted}


def choose(order: list[Waiting], loaded: str | None, loads: dict[int, int], max_pass_overs: int) -> Choice | None:
    """The rules of the module docstring on plain values: `order` in turn order, `loaded` the worker's target."""
    if not order:
        return None
    due = [w for w in order if w.passed_over >= max_pass_overs]
    if due:
        chosen = due[0]
    else:
        rank = {w.pk: i for i, w in enumerate(order)}

        def preference(w: Waiting) -> tuple[bool, int, int]:
            needs_load = loaded is None or w.target != loaded
            return needs_load, loads.get(w.owner_id, 0) if needs_load else 0, rank[w.pk]

        chosen = min(order, key=preference)
    ahead = order[: order.index(chosen)]
    return Choice(chosen.pk, [w.pk for w in ahead])


def next_for(worker_name: str) -> Choice | None:
    """The queued answer `worker_name` should take next; None when none is waiting."""
    order = turn_order()
    if not order:
        return None
    loaded = loaded_target(worker_name)
    loads = loads_caused({w.owner_id for w in order})
    return choose(order, loaded, loads, settings.MTM_PLAYGROUND_MAX_PASS_OVERS)
