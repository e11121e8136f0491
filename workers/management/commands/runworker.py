"""`manage.py runworker --gpus 0` / `--gpus 0,1` / `--cpu`: one training worker that owns those devices."""

from __future__ import annotations

import os
import socket
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from workers.devices import CPU_PROCESSES_ENV, MAX_DEVICES
from workers.models import Worker
from workers.probe import probe_in_child
from workers.queues import inference_worker_queues, worker_queues


def parse_gpus(raw: str) -> list[int]:
    parts = [p.strip() for p in raw.split(",")]
    if not raw.strip() or not all(p.isdigit() for p in parts):
        raise CommandError(f"--gpus {raw!r}: give device indexes separated by commas, e.g. --gpus 0 or --gpus 0,1.")
    if len(set(parts)) != len(parts):
        raise CommandError(f"--gpus {raw!r} names a device twice.")
    return [int(p) for p in parts]


class Command(BaseCommand):
    help = (
        "Start a Celery worker that trains on the given GPUs (or on the CPU): it sees only those devices "
        "(CUDA_VISIBLE_DEVICES), runs one run at a time, has a unique name and consumes its own queue, the shared "
        "training queue and the capacity queues its devices can host."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--gpus", help="Device indexes this worker owns, e.g. 0 or 0,1.")
        where.add_argument("--cpu", action="store_true", help="Train on the CPU (no GPU visible to this worker).")
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="With --cpu: the processes one run may span (its 'devices' for a run that asks for several; DDP "
            "with gloo). The CPU threads are shared out among them.",
        )
        parser.add_argument(
            "--inference",
            action="store_true",
            help="A playground worker: it answers playground messages (queue 'inference') and keeps the last model "
            "loaded a while; it takes no training run.",
        )
        parser.add_argument(
            "--name",
            help="The worker's name (default: gpu0@host, gpu0-1@host or cpu@host; playground-… with --inference).",
        )
        parser.add_argument(
            "--also", default="", help="More queues to consume, comma-separated (e.g. default, for one worker)."
        )
        parser.add_argument("--loglevel", default="INFO")

    def handle(
        self,
        *args,
        gpus: str | None,
        cpu: bool,
        processes: int,
        inference: bool,
        name: str | None,
        also: str,
        loglevel: str,
        **options,
    ):
        host = socket.gethostname()
        env = dict(os.environ)
        if processes < 1 or processes > MAX_DEVICES:
            raise CommandError(f"--processes {processes}: give a number from 1 to {MAX_DEVICES}.")
        if processes != 1 and not cpu:
            raise CommandError(
                "--processes is for a CPU worker (--cpu); a GPU worker runs one process per GPU of --gpus."
            )
        if processes != 1 and inference:
            raise CommandError("--processes is for a training worker; a playground worker (--inference) runs one.")
        env[CPU_PROCESSES_ENV] = str(processes) if cpu else ""
        if cpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
            default_name = f"cpu@{host}"
        else:
            indexes = parse_gpus(gpus or "")
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, indexes))
            default_name = f"gpu{'-'.join(map(str, indexes))}@{host}"
        if inference:
            default_name = "playground-" + default_name
            env["MTM_PLAYGROUND_WORKER"] = "1"  # its pool process imports torch and transformers at once
        name = name or default_name
        if "@" not in name:
            name = f"{name}@{host}"
        try:
            live = Worker.objects.filter(name=name).first()
        except DatabaseError as exc:  # a database not migrated yet: the worker runs, its reports fail until then
            self.stderr.write(f"[runworker] cannot read the workers table ({exc}); run: python manage.py migrate")
            live = None
        if live is not None and not live.is_gone:
            raise CommandError(
                f"A worker named {name} is already running (pid {live.pid} on {live.host}, last seen "
                f"{live.last_seen:%H:%M:%S}). Give this one another --name, or stop that one first."
            )
        devices = []
        if not cpu:
            probed = _probe_with(env)
            devices = probed.get("devices", [])
            if len(devices) != len(indexes):
                seen = ", ".join(f"#{d['index']} {d['name']}" for d in devices) or "none"
                why = f" ({probed['error']})" if probed.get("error") else ""
                raise CommandError(
                    f"--gpus {gpus}: this worker would see {len(devices)} CUDA device(s) ({seen}){why}, not "
                    f"{len(indexes)}. Check the indexes with nvidia-smi, or start a CPU worker with --cpu."
                )
        smallest = min((d["total_bytes"] for d in devices), default=0)
        queues = (
            inference_worker_queues(name)
            if inference
            else worker_queues(name, len(devices), smallest, processes if cpu else 1)
        )
        queues += [q for q in (p.strip() for p in also.split(",")) if q and q not in queues]
        argv = [sys.executable, "-m", "celery", "-A", "mtm", "worker", "-n", name, "-Q", ",".join(queues)]
        argv += ["--concurrency", "1", "--prefetch-multiplier", "1", "--loglevel", loglevel]
        self.stdout.write(
            f"[runworker] {name}: devices {env['CUDA_VISIBLE_DEVICES'] or f'none (CPU, {processes} process(es))'}; queues {','.join(queues)}"
        )
        self.stdout.flush()
        os.chdir(settings.BASE_DIR)
        # Exec, not a child: the signals a supervisor sends (SIGTERM for a warm shutdown) reach Celery itself.
        os.execve(sys.executable, argv, env)  # noqa: S606 (a fixed argv, no shell)


def _probe_with(env: dict[str, str]) -> dict:
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]
    try:
        return probe_in_child()
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
