"""Placement benchmark: Start → trainer launched on a free worker, over real Redis and a real `runworker` process.
Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.placement [--starts 20]

Sets up a throwaway portal (its own var/ with a SQLite database, the tiny Llama in its own HF cache, a Redis database
of its own), starts one CPU training worker with `manage.py runworker --cpu`, then STARTS times: start_run() as the
page calls it, wait until the worker has resolved the run and launched the trainer (status "training", written just
before the trainer process is spawned), record the time, cancel it and wait for it to end (so the worker is free for
the next). Prints p50, p99 and max of Start → trainer launched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.redis_server import DatabaseClaim, find_server

    server, private = find_server()
    claim = DatabaseClaim(server)
    root = Path(tempfile.mkdtemp(prefix="mtm-bench-placement-"))
    env = {
        "MTM_VAR_DIR": str(root / "var"),
        "DATABASE_URL": f"sqlite:///{root / 'portal.sqlite3'}",
        "REDIS_URL": claim.url,
        "CELERY_BROKER_URL": claim.url,
        "CELERY_RESULT_BACKEND": claim.url,
        "HF_HUB_CACHE": str(root / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MTM_WORKER_REPORT_SECONDS": "2",
        "DJANGO_SETTINGS_MODULE": "mtm.settings",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from models_registry.demo import build_tiny_llama, install_into_cache
    from models_registry.models import PortalSettings
    from projects.models import TrainingProject, TrainingRun
    from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, cancel, start, write_jsonl

    call_command("migrate", verbosity=0)
    install_into_cache(build_tiny_llama(root / "model"), root / "hub", "bench/tiny-llama")
    row = PortalSettings.load()
    row.allowed_output_roots, row.allowed_dataset_roots = [str(root / "outputs")], [str(root / "datasets")]
    row.save()
    (root / "outputs").mkdir()
    dataset = write_jsonl(root / "datasets" / "qa.jsonl", QA_ROWS * 8)
    user = User.objects.create_user("bench")
    with open(root / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "--cpu", "--name", "bench"],
            cwd=REPO,
            env={**os.environ},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while b" ready." not in (root / "worker.log").read_bytes():
            if worker.poll() is not None:
                raise SystemExit((root / "worker.log").read_text())
            time.sleep(0.2)
        launched = []
        for i in range(args.starts):
            project = TrainingProject.objects.create(
                name=f"p{i}",
                owner=user,
                model_name="bench/tiny-llama",
                dataset_path=str(dataset),
                method="full",
                output_directory=str(root / "outputs" / f"p{i}"),
                hyperparameters={**FAST_HYPERPARAMETERS, "max_steps": 2000},
            )
            clock = time.monotonic()
            run = start(project, user)
            while TrainingRun.objects.filter(pk=run.pk, status="training").count() == 0:
                if TrainingRun.objects.get(pk=run.pk).has_ended:
                    raise SystemExit(f"run {run.pk} ended: {TrainingRun.objects.get(pk=run.pk).error_message}")
                time.sleep(0.01)
            launched.append(time.monotonic() - clock)
            cancel(run, user)
            while not TrainingRun.objects.get(pk=run.pk).has_ended:
                time.sleep(0.1)
        launched.sort()
        p99 = launched[min(len(launched) - 1, round(0.99 * (len(launched) - 1)))]
        print(
            json.dumps(
                {
                    "starts": len(launched),
                    "p50_s": round(statistics.median(launched), 3),
                    "p99_s": round(p99, 3),
                    "max_s": round(launched[-1], 3),
                    "cpu_threads": os.cpu_count(),
                }
            )
        )
    finally:
        worker.terminate()
        worker.wait(60)
        claim.release()
        if private is not None:
            private.stop()


if __name__ == "__main__":
    main()
