"""Calling the JSON API from tests: HTTPS (settings redirect plain HTTP when DEBUG is off), JSON bodies, tokens."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.test import Client

from mtm.models import ApiToken

API = "/api/v1"


def call(client: Client, method: str, path: str, body: Any = None, token: str | None = None, **extra: Any):
    """`body` may be a dict/list (sent as JSON) or str/bytes (sent as they are, to test malformed bodies)."""
    kwargs: dict[str, Any] = {"secure": True, **extra}
    if token:
        kwargs.setdefault("headers", {})["Authorization"] = f"Bearer {token}"
    if body is not None:
        kwargs["data"] = body if isinstance(body, str | bytes) else json.dumps(body)
        kwargs["content_type"] = "application/json"
    return getattr(client, method.lower())(API + path, **kwargs)


def make_user_token(username: str, staff: bool = False) -> tuple[Any, str]:
    user = get_user_model().objects.create_user(username, is_staff=staff)
    _, raw = ApiToken.issue(user, "tests")
    return user, raw


def codes(problems: list[dict[str, str]]) -> list[str]:
    return [p["code"] for p in problems]
