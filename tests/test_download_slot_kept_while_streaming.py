"""A download's request slot stays held while its response still streams, however long that takes: only a slot
whose holder stopped sending (a killed process) is reclaimed as stale. So a member's downloads in flight never
exceed the cap, even when each is read slowly for longer than STALE_AFTER.

Real StreamingHttpResponses through held_while_sent and real slot rows; a long download is stood in for by slot
rows aged past STALE_AFTER, as the clock would leave them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.utils import timezone

from mtm.models import ExpensiveRequestSlot
from mtm.request_limits import STALE_AFTER, Busy, held_while_sent

pytestmark = pytest.mark.django_db


def _archive():
    for _ in range(100):
        yield b"x" * 1024


def _download(user: User) -> StreamingHttpResponse:
    response = held_while_sent(user, lambda: StreamingHttpResponse(_archive()))
    next(iter(response))  # the first chunk is sent; the client reads the rest slowly
    return response


def _age_slots(user: User) -> None:
    ExpensiveRequestSlot.objects.filter(user=user).update(started_at=timezone.now() - STALE_AFTER * 1.1)


def test_downloads_still_sending_keep_their_slots_past_stale_after(settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 2
    settings.MTM_REQUEST_SLOT_REFRESH_SECONDS = 0  # every chunk marks the slot alive
    mallory = User.objects.create_user("mallory")
    streams = [_download(mallory), _download(mallory)]
    _age_slots(mallory)
    for stream in streams:  # still streaming: each sends another chunk
        next(iter(stream))
    with pytest.raises(Busy):
        held_while_sent(mallory, lambda: StreamingHttpResponse(_archive()))
    assert ExpensiveRequestSlot.objects.filter(user=mallory).count() == 2


def test_a_slot_whose_holder_stopped_sending_is_reclaimed(settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    settings.MTM_REQUEST_SLOT_REFRESH_SECONDS = 0
    mallory = User.objects.create_user("mallory")
    _download(mallory)  # its process is killed: nothing more is sent, nothing released
    _age_slots(mallory)
    fresh = _download(mallory)
    assert not fresh.closed
    assert ExpensiveRequestSlot.objects.filter(user=mallory).count() == 1


def test_the_slot_is_refreshed_at_most_every_refresh_interval(settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    settings.MTM_REQUEST_SLOT_REFRESH_SECONDS = 3600
    mallory = User.objects.create_user("mallory")
    stream = _download(mallory)
    _age_slots(mallory)
    aged = ExpensiveRequestSlot.objects.get(user=mallory).started_at
    for _ in range(10):
        next(iter(stream))
    assert ExpensiveRequestSlot.objects.get(user=mallory).started_at == aged  # no write a chunk
    list(stream)  # sent to the end: the slot is released
    assert not ExpensiveRequestSlot.objects.filter(user=mallory).exists()
