"""An inference worker forgets the models a previous process of the same name had loaded when it starts and when it
stops, so the GPUs page and placement never count memory nobody holds."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.db import connection

log = logging.getLogger(__name__)


def forget_loaded(worker_name: str) -> None:
    from playground.models import LoadedModel

    LoadedModel.objects.filter(worker_name=worker_name).delete()


@worker_ready.connect
def _forget_at_start(sender: Any = None, **_: Any) -> None:
    try:
        forget_loaded(getattr(sender, "hostname", "") or "")
    except Exception:
        log.warning("could not clear the playground models of an earlier worker", exc_info=True)
    finally:
        connection.close()


@worker_shutdown.connect
def _forget_at_stop(sender: Any = None, **_: Any) -> None:
    try:
        forget_loaded(getattr(sender, "hostname", "") or "")
    except Exception:
        log.warning("could not clear the playground models of this worker", exc_info=True)
    finally:
        connection.close()
