"""An inference worker's main process imports torch and transformers before Celery forks its pool process (the
worker_init signal), so the pool process starts with them and never imports transformers in two threads at once.
Importing it in a thread of the pool process as it started raced the first message's own import: Python hands a
thread in a concurrent circular import a half-initialised module, and a member's first message failed with
model_load_failed "cannot import name 'AutoModelForCausalLM' from 'transformers'"."""

from __future__ import annotations

import subprocess
import sys

from mtm.settings import BASE_DIR

SCRIPT = """
import sys, threading

import django

django.setup()

from celery.signals import worker_init

worker_init.send(sender=None)
print("threads:", threading.active_count())
print("imported:", all(name in sys.modules for name in (
    "torch", "transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto")))
"""


def run_script(inference: bool) -> str:
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "mtm.settings", "HF_HUB_OFFLINE": "1"}
    if inference:
        env["MTM_PLAYGROUND_WORKER"] = "1"
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_an_inference_worker_imports_the_libraries_before_its_pool_starts_and_in_no_thread():
    assert run_script(inference=True).splitlines() == ["threads: 1", "imported: True"]


def test_a_training_worker_leaves_them_to_its_trainer_processes():
    assert run_script(inference=False).splitlines() == ["threads: 1", "imported: False"]
