"""The model checks waiting on the real broker: what the pages and the fill queued (read straight from Redis, as
Celery wrote them) and a `broker` fixture that removes the ones a test leaves behind, so no later test's worker
runs them. Import the fixture into a test module: `from tests.broker_checks import broker  # noqa: F401`."""

from __future__ import annotations

import json

import pytest
import redis

from models_registry.deep_state import CHECK_TASK


def check_messages(redis_url: str) -> list[tuple[bytes, bytes, dict]]:
    """Every check message waiting on the broker, whichever queue it was routed to: (queue key, raw, headers)."""
    server = redis.Redis.from_url(redis_url)
    found = []
    for key in server.scan_iter():
        if server.type(key) != b"list":
            continue
        for raw in server.lrange(key, 0, -1):
            try:
                headers = json.loads(raw).get("headers", {})
            except (ValueError, AttributeError):
                continue  # not a Celery message
            if headers.get("task") == CHECK_TASK:
                found.append((key, raw, headers))
    return found


def queued_checks(redis_url: str) -> list[str]:
    """The waiting checks' arguments, as Celery wrote them (argsrepr)."""
    return [headers["argsrepr"] for _, _, headers in check_messages(redis_url)]


def queued_with_kwargs(redis_url: str) -> list[str]:
    """The waiting checks' arguments and keyword arguments, as Celery wrote them."""
    return [f"{headers['argsrepr']} {headers['kwargsrepr']}" for _, _, headers in check_messages(redis_url)]


@pytest.fixture
def broker(celery_broker):
    """The session's Redis as this process's broker, with the checks the test left queued removed after it."""
    yield celery_broker
    server = redis.Redis.from_url(celery_broker)
    for key, raw, _ in check_messages(celery_broker):
        server.lrem(key, 0, raw)
