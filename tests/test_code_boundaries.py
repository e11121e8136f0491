"""Boundaries that must hold in every line of our code, checked on the source itself:
no user text reaches a shell, a model's own code never runs unless a staff override allows it, and pickled
weights are never loaded with weights_only=False."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
# Every app of ours in INSTALLED_APPS (a new one is scanned without an edit here), and the bench/ scripts.
OUR_PACKAGES = sorted({app.split(".")[0] for app in settings.INSTALLED_APPS if (ROOT / app.split(".")[0]).is_dir()})
SOURCES = sorted(p for d in [*OUR_PACKAGES, "bench"] for p in (ROOT / d).rglob("*.py"))


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_shell_and_no_unsafe_loading(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for call in calls(tree):
        name = dotted(call.func)
        assert name not in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"), (
            f"{path}:{call.lineno}: {name} runs a shell"
        )
        for kw in call.keywords:
            literal = kw.value.value if isinstance(kw.value, ast.Constant) else None
            assert not (kw.arg == "shell" and literal is True), f"{path}:{call.lineno}: shell=True"
            assert not (kw.arg == "weights_only" and literal is False), f"{path}:{call.lineno}: weights_only=False"
            if kw.arg == "trust_remote_code" and literal is True:
                # Only a query for the staff-set override flag may name it; nothing may switch it on directly.
                assert name.endswith(".filter"), f"{path}:{call.lineno}: trust_remote_code=True in {name}()"


def test_the_scan_sees_our_code():
    assert len(SOURCES) > 40
    assert set(OUR_PACKAGES) >= {"mtm", "models_registry", "projects", "playground", "workers"}
    assert any(p.name == "stages.py" for p in SOURCES)
    assert ROOT / "workers" / "probe.py" in SOURCES  # it starts processes: the shell check must read it


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_run_state_machine_knows_nothing_of_celery():
    """No cycle pipeline → tasks → stages → pipeline: the first task is published by the run service."""
    path = ROOT / "projects" / "runs" / "state_machine.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    celery_side = {"projects.runs.tasks", "projects.runs.stages", "projects.runs.services", "mtm.celery"}
    imported = imported_modules(tree)
    assert not {m for m in imported if m in celery_side or m.split(".")[0] in ("celery", "kombu")}, imported
    publishing = [dotted(c.func) for c in calls(tree) if dotted(c.func).endswith((".apply_async", ".delay"))]
    assert publishing == []


def test_importing_the_state_machine_loads_no_task_module():
    code = (
        "import django, sys; django.setup(); import projects.runs.state_machine; "
        "print(sorted(m for m in sys.modules if m in ('projects.runs.tasks', 'projects.runs.stages', 'projects.runs.services')))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mtm.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
