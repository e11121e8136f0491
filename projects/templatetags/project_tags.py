"""Presentation helpers of the project and run pages: status badges, durations, the loss chart, JSON rows."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import template
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from projects.models import RunStatus
from projects.runs.charts.loss import loss_chart_svg
from projects.runs.display import format_seconds

register = template.Library()


@register.filter
def status_badge(status: str) -> str:
    """The badge class of a run status: green succeeded, red failed, grey cancelled, blue while live."""
    return RunStatus.badge_of(status)


@register.filter
def seconds(value: Any) -> str:
    return format_seconds(value)


@register.filter
def row_json(value: Any) -> str:
    """A dataset row as one line of JSON, as it would look in a JSONL file (autoescaped by the template)."""
    return json.dumps(value, ensure_ascii=False, default=str)


@register.simple_tag
def loss_chart(metrics: Any, resumed_at: int | None = None) -> SafeString:
    # loss_chart_svg escapes every text it writes; the numbers are formatted by it.
    return mark_safe(loss_chart_svg(metrics, resumed_at=resumed_at))  # noqa: S308


@register.filter
def moment(value: datetime | None) -> str:
    """A time as a <time> element: the clock time alone when it is today, the date too when it is not; the full
    ISO timestamp in its datetime and title (shown on hover)."""
    if not isinstance(value, datetime):
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    shown = dateformat.format(local, "H:i:s" if local.date() == timezone.localdate() else "Y-m-d H:i:s")
    stamp = local.isoformat(timespec="seconds")
    return format_html('<time datetime="{}" title="{}">{}</time>', stamp, stamp, shown)


@register.filter
def field_warning(warnings: Any, name: str) -> str:
    """The warning shown under the field `name` ("" when none)."""
    return warnings.get(name, "") if isinstance(warnings, dict) else ""
