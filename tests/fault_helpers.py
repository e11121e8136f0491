"""For the fault tests (tests/test_faults*.py, tests/test_dpo_faults.py): a portal with the tiny Llama, its projects,
and the trainer children of a killed worker."""

from __future__ import annotations

import time

import psutil
import pytest
from django.contrib.auth.models import User

from tests.pipeline_helpers import make_project

# Far more steps than a fault test waits for: the run is still training when the fault comes.
LONG = {"max_steps": 2000, "save_steps": 3, "learning_rate": 0.001}


@pytest.fixture
def portal(portal_roots, transactional_db, tiny_llama_in_cache):
    """A member, ops, the portal's roots (committed rows, so a worker sees them) and the tiny Llama's name."""
    return {"user": User.objects.create_user("ops"), "root": portal_roots, "model": tiny_llama_in_cache[0]}


def project(portal, name, hyper=None, output=None):
    """A full fine-tune of the `portal` fixture's member, in `output` or under the portal's outputs/."""
    return make_project(portal, portal["model"], name=name, hyper=hyper, output=output)


def trainer_processes(spec_fragment: str) -> list[psutil.Process]:
    """The trainer children whose command line holds `spec_fragment` (a part of their spec's path)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "projects.trainer" in cmd and spec_fragment in cmd:
            found.append(proc)
    return found


def assert_trainer_dies(spec_fragment: str, timeout: float = 30) -> None:
    """The trainer child of a killed worker ends by itself (it watches its parent); wait for that, bounded."""
    deadline = time.monotonic() + timeout
    while trainer_processes(spec_fragment) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trainer_processes(spec_fragment) == [], "the trainer child must die with its worker"
