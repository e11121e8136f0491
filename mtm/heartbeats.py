"""A thread that beats while a block runs: a run's or a playground answer's worker proves it is alive this way,
and the periodic reapers fail what stops beating."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)


@contextlib.contextmanager
def beating(beat: Callable[[], None], name: str, every: float | None = None) -> Iterator[None]:
    """Call `beat` every `every` seconds (MTM_HEARTBEAT_SECONDS) from a thread until the block ends; the block itself
    may wait minutes on a child process or a model load. A failed beat (a locked or unreachable database) is logged
    and the next one tries again."""
    every = every or settings.MTM_HEARTBEAT_SECONDS
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.wait(every):
                try:
                    beat()
                except Exception:
                    log.warning("%s failed", name, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 5)
