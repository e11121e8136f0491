"""Counting the tokens of a dataset check as the worker does, for tests that read a check's numbers.

The check answers "Counting tokens…" and queues projects.count_dataset_tokens after commit; a test inside one
transaction runs the task's domain function itself, then asks the page's polled URL, as htmx would."""

from __future__ import annotations

import html
import re
from typing import Any

from projects.datasets.token_counting import count_tokens
from projects.models import TokenCount

POLL_URL = re.compile(r'hx-get="([^"]*/token-count/[^"]*)"')
HX = {"HTTP_HX_REQUEST": "true"}


def poll_url(fragment: str) -> str:
    match = POLL_URL.search(fragment)
    assert match, f"no token-count poll in {fragment[:2000]}"
    return html.unescape(match.group(1))


def count_pending(path: Any, user: Any) -> int:
    """Run the task's domain function for every pending count, reading `path` for `user`; how many it ran."""
    pending = list(TokenCount.objects.filter(state=TokenCount.State.PENDING).values_list("pk", flat=True))
    for count_id in pending:
        count_tokens(count_id, str(path), getattr(user, "pk", None))
    return len(pending)


def counted(client: Any, fragment: str, path: Any, user: Any) -> str:
    """The check's fragment followed by its token counts once the worker's function has run (the final poll, 286)."""
    url = poll_url(fragment)
    assert count_pending(path, user) >= 1
    response = client.get(url, **HX)
    assert response.status_code == 286, response.content[:2000]
    return fragment + response.content.decode()
