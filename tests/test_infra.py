"""The set-up commands `make run` relies on, the launcher, and one resolution through a real worker."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from models_registry.demo import DEMO_MODEL_NAME
from models_registry.lookup import resolve_model
from models_registry.models import PortalSettings
from models_registry.names import repo_folder_name
from mtm.admin_credentials import sign_in_lines
from tests.hfcache import make_model_repo
from tests.redis_server import free_port
from tests.workers import app_publishing_to

BASE_DIR = Path(__file__).resolve().parent.parent
# What `runportal` starts: the web server, the training worker, the checks, token counts and periodic jobs' workers,
# the playground worker and Celery beat.
PORTAL_PROCESSES = ("web", "worker", "checks", "counts", "periodic", "playground", "beat")


def run_command(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


# --- ensure_admin ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def own_var_dir(settings, tmp_path):
    """A var/ of the test's own, so a generated admin password never lands in the checkout's var/."""
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    return settings.VAR_DIR


@pytest.mark.django_db
def test_ensure_admin_creates_superuser_once_and_prints_password_once(monkeypatch, own_var_dir):
    monkeypatch.delenv("MTM_ADMIN_PASSWORD", raising=False)
    first = run_command("ensure_admin")
    password = re.search(r"password: (\S+)", first).group(1)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(password)
    assert "shown once" in first

    # Kept in an owner-only file under var/ as well, since the terminal scrolls it away.
    saved = own_var_dir / "admin-credentials"
    assert str(saved) in first
    assert saved.stat().st_mode & 0o777 == 0o600
    assert f"user: admin\npassword: {password}\n" in saved.read_text()

    second = run_command("ensure_admin")
    assert password not in second
    assert "exists; nothing to do" in second
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_ensure_admin_uses_mtm_admin_password_without_printing_it(monkeypatch, own_var_dir):
    monkeypatch.setenv("MTM_ADMIN_PASSWORD", "correct-horse-battery-staple")
    output = run_command("ensure_admin")
    assert "correct-horse-battery-staple" not in output
    assert "MTM_ADMIN_PASSWORD" in output
    assert get_user_model().objects.get(username="admin").check_password("correct-horse-battery-staple")
    assert not (own_var_dir / "admin-credentials").exists()


@pytest.mark.django_db
def test_ensure_admin_leaves_an_existing_superuser_alone(monkeypatch):
    monkeypatch.delenv("MTM_ADMIN_PASSWORD", raising=False)
    get_user_model().objects.create_superuser("boss", "", "a-long-password-1")
    output = run_command("ensure_admin")
    assert "'boss' exists" in output
    assert not get_user_model().objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_ensure_admin_refuses_to_take_over_a_plain_user_named_admin(monkeypatch):
    get_user_model().objects.create_user("admin", "", "their-own-password-1")
    with pytest.raises(CommandError, match="createsuperuser"):
        run_command("ensure_admin")
    assert get_user_model().objects.get(username="admin").check_password("their-own-password-1")


@pytest.mark.django_db
def test_sign_in_lines_name_the_admin_and_where_its_generated_password_is(monkeypatch, own_var_dir):
    monkeypatch.delenv("MTM_ADMIN_PASSWORD", raising=False)
    assert "createsuperuser" in sign_in_lines("http://127.0.0.1:8000/")[0]
    run_command("ensure_admin")
    lines = "\n".join(sign_in_lines("http://127.0.0.1:8000/"))
    assert "sign in at http://127.0.0.1:8000/ as 'admin'" in lines
    assert f"generated password is in {own_var_dir / 'admin-credentials'}" in lines
    assert "python manage.py changepassword admin" in lines


# --- create_demo_model ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_demo_model_into_empty_cache_resolves_from_cache(hf_cache):
    output = run_command("create_demo_model", "--if-empty")
    result = resolve_model(DEMO_MODEL_NAME)
    assert result.valid, result.model_dump(mode="json")
    assert result.source == "cache"
    assert Path(result.path).is_relative_to(hf_cache / repo_folder_name(DEMO_MODEL_NAME) / "snapshots")
    assert DEMO_MODEL_NAME in output
    assert "random weights" in output


@pytest.mark.django_db
def test_create_demo_model_if_empty_leaves_a_non_empty_cache_alone(hf_cache):
    make_model_repo(hf_cache, "someone/real-model")
    output = run_command("create_demo_model", "--if-empty")
    assert not (hf_cache / repo_folder_name(DEMO_MODEL_NAME)).exists()
    assert "not needed" in output
    assert "models--someone--real-model" in output


@pytest.mark.django_db
def test_create_demo_model_follows_the_model_cache_path_setting(hf_cache, tmp_path):
    configured = tmp_path / "configured-cache"
    row = PortalSettings.load()
    row.model_cache_path = str(configured)
    row.save()
    run_command("create_demo_model", "--if-empty")
    assert (configured / repo_folder_name(DEMO_MODEL_NAME) / "refs" / "main").is_file()
    assert not (hf_cache / repo_folder_name(DEMO_MODEL_NAME)).exists()


# --- one resolution through a real worker on the real Redis broker --------------------------------


@pytest.mark.slow
def test_resolve_model_task_runs_on_a_real_worker(start_worker, tiny_llama_in_cache, hf_cache):
    from models_registry.tasks import resolve_model as resolve_model_task

    name, snapshot = tiny_llama_in_cache
    # The worker is another process with its own environment: it finds the cache through the settings row.
    row = PortalSettings.load()
    row.model_cache_path = str(hf_cache)
    row.save()
    worker = start_worker(queues="checks").wait_ready()  # a check a member can set off: the checks queue

    found = resolve_model_task.delay(name).get(timeout=60)
    assert found["valid"] is True, found
    assert found["source"] == "cache"
    assert found["path"] == str(snapshot)

    # Tests point the app elsewhere for a while (a broker that is down); publishing must work again after.
    with app_publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        pass
    missing = resolve_model_task.delay("test-org/not-downloaded").get(timeout=60)
    assert missing["valid"] is False
    assert [e["code"] for e in missing["errors"]] == ["model_not_found"]
    assert missing["errors"][0]["message"].startswith("Model 'test-org/not-downloaded' not found.")
    assert "models_registry.resolve_model" in worker.log_text()


# --- the launcher `make run` ends with ------------------------------------------------------------


def _started_pids(process: subprocess.Popen) -> dict[str, int]:
    pids: dict[str, int] = {}
    for line in process.stdout:
        found = re.search(r"started (\w+) \(pid (\d+)\)", line)
        if found:
            pids[found.group(1)] = int(found.group(2))
        if len(pids) == len(PORTAL_PROCESSES):
            return pids
    raise AssertionError(f"runportal exited before starting {', '.join(PORTAL_PROCESSES)} (started: {sorted(pids)})")


def _rest_of_output(process: subprocess.Popen, timeout: float = 60) -> str:
    """What the launcher prints until it exits, read through the same buffered stream `_started_pids` read from.

    communicate() reads the pipe beneath that stream, so lines already buffered with "started beat" would be lost.
    """
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(process.stdout.read()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise subprocess.TimeoutExpired(process.args, timeout)
    process.wait(timeout=timeout)
    return read[0]


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _runportal_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    # A var/ of its own: its own SQLite file and filesystem broker, so a running `make run` is not disturbed. Plain
    # HTTP with DEBUG off, as bin/run serves it.
    env = {k: v for k, v in env.items() if k != "DEBUG"}
    env.update(MTM_VAR_DIR=str(tmp_path / "var"), MTM_PLAIN_HTTP="1", PYTHONUNBUFFERED="1")
    return env


def _start_runportal(tmp_path: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "runportal", f"127.0.0.1:{port}", "--grace", "30"],
        cwd=BASE_DIR,
        env=_runportal_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _reported_workers(var_dir: Path) -> list[str]:
    """The workers that reported into runportal's own SQLite file (a report starts once Celery is ready to consume)."""
    try:
        with contextlib.closing(sqlite3.connect(var_dir / "mtm.sqlite3", timeout=5)) as db:
            return sorted(name for (name,) in db.execute("SELECT name FROM workers_worker"))
    except sqlite3.Error:
        return []


@pytest.mark.slow
def test_runportal_serves_and_ctrl_c_stops_web_and_worker(tmp_path):
    port = free_port()
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=_runportal_env(tmp_path),
        text=True,
        capture_output=True,
    )
    assert migrate.returncode == 0, migrate.stderr
    launcher = _start_runportal(tmp_path, port)
    try:
        pids = _started_pids(launcher)
        assert sorted(pids) == sorted(PORTAL_PROCESSES)
        status = None
        for _ in range(300):
            status = _get_status(f"http://127.0.0.1:{port}/admin/login/")
            if status is not None or launcher.poll() is not None:
                break
            time.sleep(0.2)
        assert status == 200  # plain HTTP, not redirected to HTTPS
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page/", timeout=5)
        assert missing.value.code == 404
        assert b"URLconf" not in missing.value.read()  # the portal's 404, not Django's debug page listing every URL
        # The five workers consume their queues on the embedded broker: each reports once Celery is ready, which a
        # queue name that broker refuses (it once held the "@" of cpu@host) never reaches.
        reported: list[str] = []
        while len(reported) < 5 and launcher.poll() is None:
            reported = _reported_workers(tmp_path / "var")
            time.sleep(0.5)
        assert [name.split("@")[0] for name in reported] == ["checks", "counts", "cpu", "periodic", "playground-cpu"]
        assert all(not _gone(pid) for pid in pids.values())

        launcher.send_signal(signal.SIGINT)
        output = _rest_of_output(launcher)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, output
    # What to sign in with comes after every start-up line (the output read here begins after "started beat"),
    # with no worker's banner in between: the workers write to var/log/.
    assert "sign in at http://127.0.0.1:" in output.split("Ctrl-C stops everything.")[0]
    assert "celery" not in output.split("Ctrl-C stops everything.")[0].lower()
    assert {p.name for p in (tmp_path / "var" / "log").iterdir()} >= {"worker.log", "checks.log", "beat.log"}
    assert "web stopped" in output and "worker stopped" in output and "beat stopped" in output
    assert _gone(pids["web"]) and _gone(pids["worker"]) and _gone(pids["beat"])
    assert "playground stopped" in output and _gone(pids["playground"])  # the playground's inference worker
    for name in ("checks", "counts", "periodic"):  # the checks, token counts and periodic jobs' workers
        assert f"{name} stopped" in output and _gone(pids[name])


@pytest.mark.slow
def test_runportal_stops_the_web_server_and_fails_when_the_worker_dies(tmp_path):
    launcher = _start_runportal(tmp_path, free_port())
    try:
        pids = _started_pids(launcher)
        os.kill(pids["worker"], signal.SIGKILL)
        output = _rest_of_output(launcher)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 1, output
    assert "worker exited with status -9; stopping the others" in output
    assert all(_gone(pid) for pid in pids.values()), pids
