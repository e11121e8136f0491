"""Checks of permission bits, whoever runs the suite: root ignores those bits, so as root the call is made in a
child process that drops to nobody (uid and gid 65534) first; as anyone else it is made here, as that user."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import Any

from django.conf import settings

# The code is imported first, as root (the interpreter's own files may be readable by root alone); only the call
# runs as nobody.
_CHILD = """
import json, os, sys
from tests.unprivileged import as_json, target_function
function = target_function(sys.argv[1])
args, kwargs = json.loads(sys.argv[2])
os.setgroups([]); os.setgid(65534); os.setuid(65534)
print(json.dumps(as_json(function(*args, **kwargs))))
"""


def target_function(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def as_json(value: Any) -> Any:
    """A check's result as plain JSON values (through its model_dump, as the API shows it)."""
    return json.loads(
        json.dumps(value, default=lambda o: o.model_dump(mode="json") if hasattr(o, "model_dump") else str(o))
    )


def call_unprivileged(target: str, *args: Any, **kwargs: Any) -> Any:
    """`target` ("package.module:function") called with JSON-able arguments by an unprivileged user; its result
    as JSON. Paths it reads must be traversable by nobody (under /tmp, not pytest's root-only tmp_path)."""
    if os.getuid() != 0:
        return as_json(target_function(target)(*args, **kwargs))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, target, json.dumps([args, kwargs])],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the unprivileged child failed ({done.returncode}): {done.stderr[-3000:]}"
    return json.loads(done.stdout)
