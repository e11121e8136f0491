"""Real `celery -A mtm worker` processes for the tests, on the test database and the session's Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
from django.conf import settings
from django.db import connection

from mtm.processes import die_with_parent

BASE_DIR = Path(settings.BASE_DIR)

# A test's worker takes every kind of work but playground chats: periodic jobs, runs, model checks, token counts.
WORKER_QUEUES = "default,training,checks,counts"


def current_database_url() -> str:
    """A DATABASE_URL for the database this test session is using right now (the test copy, not the real one)."""
    conf = connection.settings_dict
    if conf["ENGINE"] == "django.db.backends.sqlite3":
        name = str(conf["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError("A worker cannot share an in-memory SQLite database; settings give TEST NAME a file.")
        return f"sqlite:///{Path(name).resolve()}"
    if conf["ENGINE"] == "django.db.backends.postgresql":
        auth = quote(conf.get("USER") or "", safe="")
        if conf.get("PASSWORD"):
            auth += ":" + quote(conf["PASSWORD"], safe="")
        host = conf.get("HOST") or "localhost"
        port = f":{conf['PORT']}" if conf.get("PORT") else ""
        return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{quote(conf['NAME'], safe='')}"
    raise RuntimeError(f"No worker DATABASE_URL for the {conf['ENGINE']} backend.")


@contextlib.contextmanager
def app_publishing_to(redis_url: str) -> Iterator[None]:
    """Point this process's Celery app (producer and result backend) at `redis_url`, restoring it afterwards."""
    from mtm.celery import app

    keys = ("broker_url", "result_backend", "broker_transport_options")
    saved = {key: app.conf.get(key) for key in keys}
    # Celery's conf reads these variables before its own settings, so they are pointed at the URL too.
    variables = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")
    saved_environ = {name: os.environ.pop(name, None) for name in variables}
    os.environ.update(CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)
    app.conf.update(
        broker_url=redis_url, result_backend=redis_url, broker_transport_options={"visibility_timeout": 3600}
    )
    _drop_connections(app)
    try:
        yield
    finally:
        for name, value in saved_environ.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
        app.conf.update(saved)
        _drop_connections(app)


def _drop_connections(app) -> None:
    # Celery caches its connection pool and result backend on first use; forget them so the new URLs apply.
    # The pools are not closed: kombu keeps them in a registry by URL and hands the same one back when a URL
    # is used again (a closed one fails with "Acquire on closed pool").
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)


class CeleryWorker:
    """One running worker. Its output goes to `log_path`; `stop()` is Celery's warm shutdown (SIGTERM)."""

    ready_line = " ready."

    def __init__(
        self,
        redis_url: str,
        log_path: Path,
        queues: str,
        extra_env: dict[str, str] | None,
        argv: list[str] | None = None,
    ) -> None:
        self.nodename = f"mtm-test-{uuid.uuid4().hex[:10]}@%h"
        self.name = self.nodename.removesuffix("%h")  # how its Worker row's name begins (a caller's argv may change it)
        self.log_path = log_path
        # Its own var/ (run folders, listing store): concurrent test sessions must not share one.
        self.var_dir = log_path.parent / f"var-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")}
        env.update(
            DATABASE_URL=current_database_url(),
            REDIS_URL=redis_url,
            CELERY_BROKER_URL=redis_url,
            CELERY_RESULT_BACKEND=redis_url,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            MTM_VAR_DIR=str(self.var_dir),
            # A CPU worker, as `runworker --cpu` starts one: no device probe (a child importing torch, seconds of
            # CPU at each start, and a stop that waited for it) on machines that have no GPU to find.
            CUDA_VISIBLE_DEVICES="",
        )
        env.update(extra_env or {})
        if argv is None:
            argv = [sys.executable, "-m", "celery", "-A", "mtm", "worker", "-Q", queues, "-n", self.nodename]
            argv += ["--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
            argv += ["--without-heartbeat"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> CeleryWorker:
        """Block until the worker logs that it is consuming; raise with its log if it dies or never gets there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_line in self.log_text():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"Celery exited with {self.process.returncode}:\n{self.log_text()}")
            time.sleep(0.1)
        raise RuntimeError(f"Celery not ready after {timeout}s:\n{self.log_text()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_group()
        return self.process.returncode

    def stop_and_forget(self, django_db_blocker) -> None:
        """stop(), then delete its Worker row: for a module's worker, whose last report lands after the module's last
        test emptied the tables, so the next module's tests would find a worker they did not start."""
        from workers.models import Worker

        self.stop()
        with django_db_blocker.unblock():
            Worker.objects.filter(name__startswith=self.name).delete()

    def kill(self, timeout: float = 30.0) -> int:
        """SIGKILL to the worker's process group. Returns once no process of the group can run any more, so none of
        them writes to the database again (a reaper test then ages the run's heartbeat instead of waiting)."""
        self._kill_group()
        code = self.process.wait()
        deadline = time.monotonic() + timeout
        while (survivors := self._group_members()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if survivors:
            raise RuntimeError(f"worker {self.pid}'s processes {survivors} outlived SIGKILL for {timeout}s")
        return code

    def _group_members(self) -> list[int]:
        """The processes still in the worker's group that can run (a zombie cannot)."""
        members = []
        for proc in psutil.process_iter(["status"]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(proc.pid) == self.pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    members.append(proc.pid)
        return members

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


class CeleryBeat(CeleryWorker):
    """`celery -A mtm beat` sending the periodic jobs (CELERY_BEAT_SCHEDULE) to the session's Redis, with a schedule
    file of its own."""

    ready_line = "beat: Starting..."

    def __init__(self, redis_url: str, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        schedule = log_path.parent / f"celerybeat-schedule-{uuid.uuid4().hex[:8]}"
        argv = [sys.executable, "-m", "celery", "-A", "mtm", "beat", "--loglevel", "INFO", "--schedule", str(schedule)]
        super().__init__(redis_url, log_path, "", extra_env, argv)
