"""The request type views see: Django's request plus django-htmx's details (set by HtmxMiddleware)."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def wants_partial(request: HtmxHttpRequest) -> bool:
    """True for an HTMX swap; False for a full page, including htmx's own history-restore request."""
    return bool(request.htmx) and not request.htmx.history_restore_request
