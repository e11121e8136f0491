"""An inference worker forgets the models a previous process of the same name had loaded when it starts and when it
stops, so the GPUs page and placement never count memory nobody holds; its main process imports torch and
transformers before its pool process is forked, so the first message waits only for its model's load."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutdown
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


PLAYGROUND_WORKER_ENV = "MTM_PLAYGROUND_WORKER"  # set by `runworker --inference`


def _import_libraries() -> None:
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    except Exception:
        log.warning("playground worker: importing torch and transformers ahead of time failed", exc_info=True)


@worker_init.connect
def _import_before_the_pool_starts(**_: Any) -> None:
    """The worker's main process imports torch and transformers before it forks its pool process, which starts with
    them: the first message waits only for its model's load, and no two threads import transformers at once (a
    thread doing so can be handed a half-initialised module: "cannot import name 'AutoModelForCausalLM'")."""
    if os.environ.get(PLAYGROUND_WORKER_ENV) == "1":
        _import_libraries()
