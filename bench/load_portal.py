"""A throwaway portal for bench/load.py: temp var/ and database, a filled HF cache, a staff user, gunicorn.

Everything lives under one temporary folder that the caller removes; gunicorn runs in its own session so
Ctrl-C reaches only the load script, which then stops it (SIGTERM to the master, SIGKILL to its group if it lingers).
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
USERNAME = "load-staff"
# Variables that would point the portal at shared state (a broker, another cache) or weaken the production
# hardening the load runs under; the throwaway environment starts without them.
DROPPED_ENV = (
    "DJANGO_SETTINGS_MODULE",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "HF_HOME",
    "HUGGINGFACE_HUB_CACHE",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "MEDIA_ROOT",
)


@dataclass
class Portal:
    """A running throwaway portal: where it answers and how to sign in to it."""

    host: str
    port: int
    token: str
    username: str
    password: str
    database: str
    model_names: list[str]
    server: subprocess.Popen
    log: Path

    @property
    def origin(self) -> str:
        # Clients speak plain HTTP but say "https" through X-Forwarded-Proto, as the TLS proxy in front would.
        return f"https://{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fill_cache(cache: Path, repos: int) -> list[str]:
    """The demo model plus `repos` small repos (one in ten without a tokenizer, one in ten without weights).
    Returns the names of the valid ones, the demo model first."""
    from transformers.utils import logging as transformers_logging

    from models_registry.demo import DEMO_MODEL_NAME, create_demo_model
    from tests.hfcache import make_model_repo

    transformers_logging.disable_progress_bar()
    create_demo_model(cache)
    valid = [DEMO_MODEL_NAME]
    for i in range(repos):
        name = f"load-org{i % 10}/model-{i:04d}"
        tokenizer, weights = i % 10 != 3, i % 10 != 7
        make_model_repo(cache, name, tokenizer=tokenizer, weights=weights)
        if tokenizer:
            valid.append(name)
    return valid


def portal_env(tmp: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(
        MTM_VAR_DIR=str(tmp / "var"),
        HF_HUB_CACHE=str(tmp / "hf" / "hub"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        MTM_OUTPUT_ROOTS=str(tmp / "outputs"),
        MTM_DATASET_ROOTS=str(tmp / "datasets"),
        LOG_LEVEL="WARNING",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run `manage.py ARGS` in the throwaway environment; its stdout, or SystemExit with its output."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


SET_PASSWORD = (
    "import os; from django.contrib.auth import get_user_model; "
    "u = get_user_model().objects.get(username=os.environ['MTM_LOAD_USER']); "
    "u.set_password(os.environ['MTM_LOAD_PASSWORD']); u.save()"
)


def staff_user(env: dict[str, str]) -> tuple[str, str]:
    """Migrate the database and add the staff user with a password and an API token. Returns (token, password)."""
    manage(env, "migrate", "--noinput")
    token = manage(env, "create_api_token", USERNAME, "--staff", "--create-user", "--name", "load").strip()
    token = token.splitlines()[-1]
    password = secrets.token_urlsafe(18)
    manage({**env, "MTM_LOAD_USER": USERNAME, "MTM_LOAD_PASSWORD": password}, "shell", "-c", SET_PASSWORD)
    return token, password


def prepare(tmp: Path, repos: int, database_url: str) -> tuple[dict[str, str], str, str, list[str]]:
    """Cache, migrated database, staff user with a password and a token. Returns (env, token, password, names)."""
    # torch (imported to build the demo model) keeps a compile cache in the system temp folder; keep it in ours.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "torchinductor")
    env = portal_env(tmp, database_url)
    names = fill_cache(Path(env["HF_HUB_CACHE"]), repos)
    token, password = staff_user(env)
    return env, token, password, names


def answers(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/accounts/login/", headers={"X-Forwarded-Proto": "https"})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start(tmp: Path, workers: int, repos: int, database_url: str) -> Portal:
    env, token, password, names = prepare(tmp, repos, database_url)
    database = f"{database_url.split(':', 1)[0]} (DATABASE_URL)" if database_url else "SQLite (temporary file)"
    return serve(tmp, env, workers, token, password, database, names)


def serve(
    tmp: Path,
    env: dict[str, str],
    workers: int,
    token: str,
    password: str,
    database: str,
    names: list[str],
    extra_args: tuple[str, ...] = (),
) -> Portal:
    """gunicorn on a free port of 127.0.0.1 in the prepared environment, once it answers."""
    host, port = "127.0.0.1", free_port()
    log = tmp / "gunicorn.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "mtm.wsgi:application",
        "--workers",
        str(workers),
        "--bind",
        f"{host}:{port}",
        "--worker-tmp-dir",
        str(tmp),
        "--no-control-socket",  # gunicorn would otherwise leave ~/.gunicorn/gunicorn.ctl behind
        "--graceful-timeout",
        "5",
        *extra_args,
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    portal = Portal(host, port, token, USERNAME, password, database, names, server, log)
    deadline = time.monotonic() + 60
    try:
        while not answers(host, port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"gunicorn did not start on {host}:{port}; its log:\n{log.read_text(errors='replace')}"
                )
            time.sleep(0.2)
    except BaseException:  # Ctrl-C while waiting too
        stop(portal)
        raise
    return portal


def stop(portal: Portal) -> None:
    """Stop gunicorn (master and workers); never leaves it running, even when it ignores SIGTERM."""
    server = portal.server
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)  # the master stops its workers before it exits
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        # Still unreaped, so its pid is still the id of the group it leads: workers included.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def run_as_script(main: Callable[[], int]) -> None:
    """Run a benchmark's main as a script: SIGTERM stops it like Ctrl-C (gunicorn stopped, temporary files
    removed, exit status 130)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: gunicorn stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)
