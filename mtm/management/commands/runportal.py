"""`manage.py runportal`: the portal, its Celery workers and Celery beat side by side, as `make run` starts them."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mtm.admin_credentials import sign_in_lines
from mtm.processes import Child, Supervisor

# The plain Celery workers beside the training and playground workers: (name, queue, what it answers). Each queue has
# a worker of its own, so no kind of work waits behind another: a verdict check on a planted model may run for
# minutes, a token count is what a member waits for on the dataset form, and `default` carries only the periodic
# jobs (the reapers, upload cleanup), which nothing a member sends can reach.
SIDE_WORKERS = (
    ("checks", "checks", "transformers' verdict checks and their background fill"),
    ("counts", "counts", "token counts of dataset checks"),
    ("periodic", "default", "the periodic jobs: reaping lost runs and generations, upload cleanup"),
)


def side_workers(log_dir: Path | None = None) -> list[Child]:
    """The plain Celery workers runportal starts (SIDE_WORKERS), one task at a time each, named NAME@host; with
    `log_dir`, each writes its output to NAME.log there."""
    children = []
    for name, queue, _ in SIDE_WORKERS:
        argv = [sys.executable, "-m", "celery", "-A", "mtm", "worker", "-Q", queue, "--concurrency", "1"]
        argv += ["-n", f"{name}@%h", "--loglevel", "INFO"]
        children.append(Child(name, argv, signal.SIGTERM, log_path=log_dir / f"{name}.log" if log_dir else None))
    return children


def log_dir() -> Path:
    """Where runportal's workers and beat write their output, so the terminal keeps the web server's and its own."""
    return Path(settings.VAR_DIR) / "log"


class Command(BaseCommand):
    help = (
        "Serve the portal (Django's server) with a training worker, a checks worker, a token counts worker, a "
        "worker for the periodic jobs, a playground worker and Celery beat (which sends the periodic jobs, such as "
        "failing runs whose worker was lost) beside it. Ctrl-C stops them all; if one exits, the others are stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000", help="Address and port to serve on.")
        parser.add_argument(
            "--queues",
            default="training",
            help="Queues the training worker consumes besides its own (comma-separated).",
        )
        parser.add_argument(
            "--worker-gpus", default="", help="GPUs the worker trains on, e.g. 0 (default: a CPU worker)."
        )
        parser.add_argument("--no-worker", action="store_true", help="Serve the portal only (no worker, no beat).")
        parser.add_argument(
            "--grace", type=float, default=20.0, help="Seconds to wait for a clean stop before killing."
        )

    def handle(
        self, *args, addrport: str, queues: str, worker_gpus: str, no_worker: bool, grace: float, **options
    ) -> None:
        if grace < 0:
            raise CommandError(f"--grace {grace} is negative; give the seconds to wait for a clean stop.")
        manage_py = str(settings.BASE_DIR / "manage.py")
        children = [Child("web", [sys.executable, manage_py, "runserver", "--noreload", addrport], signal.SIGINT)]
        logs = log_dir()
        if not no_worker:
            # A training worker as `runworker` starts one (one run at a time, its own name and queues), which
            # also consumes the queues given here.
            devices = ["--gpus", worker_gpus] if worker_gpus else ["--cpu"]
            worker = [sys.executable, manage_py, "runworker", *devices, "--also", queues]
            children.append(Child("worker", worker, signal.SIGTERM, log_path=logs / "worker.log"))
            children += side_workers(logs)
            # A playground worker beside it (queue inference): it answers chat messages and keeps the model loaded.
            playground = [sys.executable, manage_py, "runworker", *devices, "--inference"]
            children.append(Child("playground", playground, signal.SIGTERM, log_path=logs / "playground.log"))
            beat = [sys.executable, "-m", "celery", "-A", "mtm", "beat", "--loglevel", "INFO"]
            beat += ["--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME]
            children.append(Child("beat", beat, signal.SIGTERM, log_path=logs / "beat.log"))
        broker = settings.CELERY_BROKER_URL.split("@")[-1]  # never print a password in the URL
        self.stdout.write(f"[runportal] portal: http://{addrport}/  (admin: http://{addrport}/admin/)")
        periodic = "off" if no_worker else ", ".join(settings.CELERY_BEAT_SCHEDULE)
        self.stdout.write(f"[runportal] broker: {broker}; worker queues: {'none' if no_worker else queues}")
        if not no_worker:
            for name, queue, answers in SIDE_WORKERS:
                self.stdout.write(f"[runportal] {name} worker: queue {queue} ({answers})")
            self.stdout.write("[runportal] playground worker: queue inference (keeps a model loaded while in use)")
        self.stdout.write(f"[runportal] periodic jobs (celery beat): {periodic}")
        self.stdout.flush()
        started = []
        if not no_worker:
            started.append(f"workers' and beat's output: {logs}/<name>.log (e.g. tail -f {logs / 'worker.log'})")
        started += sign_in_lines(f"http://{addrport}/")
        started.append("Ctrl-C stops everything.")
        code = Supervisor(children, grace_seconds=grace, started_lines=started).run(env=dict(os.environ))
        if code:
            sys.exit(code)
