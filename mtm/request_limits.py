"""A per-member cap on expensive requests in progress (dataset checks, uploads, project saves, model checks, adapter
downloads while they stream).

Slots live in the database (mtm.ExpensiveRequestSlot), numbered 0..cap-1 and unique per member: taking one is an
insert that fails when another process holds that number, so every gunicorn process sees the same count without a
lock. A slot is released when the request ends; one left by a process that was killed mid-request is reclaimed once
it is older than STALE_AFTER. A download that streams for longer keeps its slot fresh as it sends (`_HeldUntilSent`),
so only a slot whose holder is gone goes stale.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from mtm.api_errors import error_body
from mtm.models import ExpensiveRequestSlot
from mtm.shared.problems import Problem

# A bounded check answers within seconds: by then one of the member's slots is free again.
RETRY_AFTER_SECONDS = 5
STALE_AFTER = timedelta(minutes=5)


class Busy(Exception):
    """The member already has `limit` expensive requests in progress."""

    def __init__(self, limit: int, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(self.message)

    @property
    def code(self) -> str:
        return "too_many_expensive_requests"

    @property
    def message(self) -> str:
        requests = "request" if self.limit == 1 else "requests"
        return (
            f"You already have {self.limit} expensive {requests} (model or dataset checks, uploads, project saves or "
            "adapter downloads) "
            f"in progress, the most one member may run at once. Try again in {self.retry_after} seconds, once one of "
            "them has finished."
        )

    @property
    def hint(self) -> str:
        return "Wait for the checks and saves in your other tabs or scripts to answer before sending more."

    def as_problem(self) -> Problem:
        return Problem(self.code, self.message, self.hint)


def busy_response(busy: Busy) -> JsonResponse:
    """The API's answer beyond the cap: 429, the error object, and Retry-After."""
    response = JsonResponse(error_body([busy.as_problem().model_dump()]), status=429)
    response["Retry-After"] = str(busy.retry_after)
    return response


def per_member_limit() -> int:
    return max(0, int(settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER))


def _take(user: Any, limit: int) -> ExpensiveRequestSlot:
    ExpensiveRequestSlot.objects.filter(user=user, started_at__lt=timezone.now() - STALE_AFTER).delete()
    for number in range(limit):
        try:
            with transaction.atomic():
                return ExpensiveRequestSlot.objects.create(user=user, number=number)
        except IntegrityError:
            continue
    raise Busy(limit)


class _Hold:
    """One of a member's slots, held until `release` (once; later calls do nothing). No slot without a cap."""

    def __init__(self, user: Any) -> None:
        limit = per_member_limit()
        self.slot_id = _take(user, limit).pk if limit and getattr(user, "pk", None) else None

    def refresh(self) -> None:
        """Mark the slot as still in use, so that it is not reclaimed as stale."""
        if self.slot_id is not None:
            ExpensiveRequestSlot.objects.filter(pk=self.slot_id).update(started_at=timezone.now())

    def release(self) -> None:
        if self.slot_id is not None:
            ExpensiveRequestSlot.objects.filter(pk=self.slot_id).delete()
            self.slot_id = None


@contextmanager
def expensive_request(user: Any) -> Iterator[None]:
    """Hold one of `user`'s expensive-request slots for the block; raises Busy when all are held."""
    hold = _Hold(user)
    try:
        yield
    finally:
        hold.release()


class _HeldUntilSent:
    """A streamed response's chunks, holding the member's slot until the last one is sent or the server closes
    the response (a client that went away): a download costs the web process for as long as it streams. While it
    streams, the slot is refreshed at most every MTM_REQUEST_SLOT_REFRESH_SECONDS (one UPDATE, not one a chunk)."""

    def __init__(self, chunks: Iterable[bytes], hold: _Hold) -> None:
        self.chunks, self.hold = iter(chunks), hold
        self.refreshed = time.monotonic()

    def __iter__(self) -> _HeldUntilSent:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self.chunks)
        except BaseException:  # the end, or a stream cut by an error
            self.hold.release()
            raise
        now = time.monotonic()
        if now - self.refreshed >= settings.MTM_REQUEST_SLOT_REFRESH_SECONDS:
            self.hold.refresh()
            self.refreshed = now
        return chunk

    def close(self) -> None:
        self.hold.release()


def held_while_sent(user: Any, respond: Callable[[], HttpResponse]) -> HttpResponse:
    """`respond()` holding one of `user`'s slots; a streamed response keeps it until it is sent (or closed), any
    other until it is made. Raises Busy when all are held, before `respond` is called."""
    hold = _Hold(user)
    try:
        response = respond()
    except BaseException:
        hold.release()
        raise
    if not getattr(response, "streaming", False) or getattr(response, "is_async", False):
        hold.release()
        return response
    response.streaming_content = _HeldUntilSent(response.streaming_content, hold)
    return response


def limited_view(render_busy: Callable[[HttpRequest, Problem], HttpResponse]):
    """Hold one of the member's expensive-request slots while the view runs (a streamed response: until it is
    sent); beyond the cap answer 429 with Retry-After and `render_busy`'s page or fragment, which says (the
    problem) when to try again."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return held_while_sent(request.user, lambda: view(request, *args, **kwargs))
            except Busy as busy:
                response = render_busy(request, busy.as_problem())
                response.status_code = 429
                response["Retry-After"] = str(busy.retry_after)
                return response

        return wrapper

    return decorator
