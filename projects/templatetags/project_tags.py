"""Presentation helpers of the project and run pages: status badges, durations, the loss chart, JSON rows."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from projects.charts import loss_chart_svg
from projects.display import format_seconds
from projects.models import RunStatus

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
def loss_chart(metrics: Any) -> SafeString:
    # loss_chart_svg escapes every text it writes; the numbers are formatted by it.
    return mark_safe(loss_chart_svg(metrics))  # noqa: S308
