"""The audit log page (staff): every recorded change, newest first, filtered by action, object type and actor."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers

from mtm.htmx import HtmxHttpRequest, wants_partial
from mtm.models import AuditEvent

PAGE_SIZE = 50
MAX_PARAM_CHARS = 150
CHANGES_PREVIEW_CHARS = 300
NO_ACTOR = "-"  # the actor filter's value for events without a person: failed sign-ins, the command line


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)


def _filters(request: HtmxHttpRequest) -> dict[str, str]:
    return {key: request.GET.get(key, "").strip()[:MAX_PARAM_CHARS] for key in ("action", "object_type", "actor")}


def _filtered_events(filters: dict[str, str]):
    events = AuditEvent.objects.select_related("actor").order_by("-at", "-pk")
    if filters["action"]:
        events = events.filter(action=filters["action"])
    if filters["object_type"]:
        events = events.filter(object_type=filters["object_type"])
    if filters["actor"] == NO_ACTOR:
        events = events.filter(actor__isnull=True)
    elif filters["actor"]:
        events = events.filter(**{f"actor__{get_user_model().USERNAME_FIELD}": filters["actor"]})
    return events


def _choices() -> dict[str, list[str]]:
    user_model = get_user_model()
    actors = (
        user_model.objects.filter(pk__in=AuditEvent.objects.filter(actor__isnull=False).values("actor"))
        .order_by(user_model.USERNAME_FIELD)
        .values_list(user_model.USERNAME_FIELD, flat=True)
    )
    return {
        "actions": list(AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()),
        "object_types": list(
            AuditEvent.objects.order_by("object_type").values_list("object_type", flat=True).distinct()
        ),
        "actors": list(actors),
    }


def _row(event: AuditEvent) -> dict[str, Any]:
    changes = compact_json(event.changes) if event.changes else ""
    return {"event": event, "changes": changes, "long": len(changes) > CHANGES_PREVIEW_CHARS}


@require_http_methods(["GET", "HEAD"])
@login_required
@vary_on_headers("HX-Request")
def audit_list(request: HtmxHttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can see the audit log.")
    filters = _filters(request)
    page = Paginator(_filtered_events(filters), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "rows": [_row(event) for event in page.object_list],
        "filters": filters,
        "filtered": any(filters.values()),
        "no_actor": NO_ACTOR,
        "preview_chars": CHANGES_PREVIEW_CHARS,
    }
    if wants_partial(request):
        return render(request, "audit/list.html#audit-results", context)
    return render(request, "audit/list.html", {**context, **_choices()})
