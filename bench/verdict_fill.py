"""Background fill of transformers' verdicts, and the model list while it runs. Not a test: prints figures for
BENCHMARKS.md.

    .venv/bin/python -m bench.verdict_fill [--tiny 6] [--repos 2000] [--rounds 7]

In a temp folder (its own SQLite database, var/ and embedded filesystem broker, nothing shared with the portal):
  1. a real Celery worker (`-Q default --concurrency 1`, as runworker starts one) fills the verdicts of a new cache
     of TINY copies of the tiny Llama, from one `models_registry.fill_verdicts` message (batch 2, so the chain of
     refills runs): seconds per repo, from the message sent to the last verdict stored;
  2. the warm model list (services.available_models: listing + the two verdict queries) of a REPOS-repo cache
     (bench.resolver's layout), with no verdict rows, with a cached verdict for every repo, and with those while
     the worker of 1 fills; beside it the listing alone (listing.list_models, no database), measured the same way
     (while filling, the two alternate). Medians of ROUNDS, or of every sample taken while filling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _environment(tmp: Path, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MTM_VAR_DIR": str(tmp / "var"),
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CELERY_BROKER_URL": "filesystem://",
        "MTM_VERDICT_FILL_BATCH": "2",
        "PYTHONUNBUFFERED": "1",
    }


def _median_ms(fn, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", type=int, default=6)
    parser.add_argument("--repos", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mtm-bench-fill-"))
    big, tiny_cache = tmp / "big", tmp / "tiny"
    tiny_cache.mkdir()
    os.environ.update(_environment(tmp, big))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mtm.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from bench.resolver import build_cache
    from models_registry import listing, lookup
    from models_registry.deep_verdict import compute_verdict, folder_key
    from models_registry.demo import build_tiny_llama, install_into_cache
    from models_registry.models import ModelVerdict, VerdictRequest
    from models_registry.tasks import fill_model_verdicts

    call_command("migrate", verbosity=0)
    build_cache(big, args.repos)
    model = build_tiny_llama(tmp / "tiny-llama")
    for i in range(args.tiny):
        install_into_cache(model, tiny_cache, f"bench/tiny-{i}")
    cache_dir, _ = lookup.current_cache_dir()
    assert cache_dir == big, cache_dir

    def listed() -> None:
        lookup.available_models()

    def listing_alone() -> None:
        listing.list_models(big)

    listed()  # warm: the listing's memo, the settings row
    results = {"no verdict rows": _median_ms(listed, args.rounds), "listing alone": _median_ms(listing_alone, 3)}
    sample = compute_verdict(model, model_name="bench/sample").model_dump(mode="json")
    now = timezone.now()
    ModelVerdict.objects.bulk_create(
        ModelVerdict(
            folder_key=folder_key(m.path), folder=m.path, fingerprint="x", valid=True, result=sample, checked_at=now
        )
        for m in listing.list_models(big)
    )
    assert all(m.deep.state == "done" for m in lookup.available_models()[1])
    results["a verdict row per repo, idle"] = _median_ms(listed, args.rounds)

    connection.close()  # the worker writes the same SQLite file
    argv = [sys.executable, "-m", "celery", "-A", "mtm", "worker", "-Q", "default", "--concurrency", "1"]
    argv += ["--prefetch-multiplier", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    with open(tmp / "worker.log", "wb") as log:
        worker = subprocess.Popen(argv, env=_environment(tmp, tiny_cache), stdout=log, stderr=subprocess.STDOUT)
    try:
        while b" ready." not in (tmp / "worker.log").read_bytes():
            time.sleep(0.2)
        busy: list[float] = []
        alone: list[float] = []
        stop = threading.Event()

        def list_while_filling() -> None:
            while not stop.is_set():  # the two alternate, so the worker's load weighs on both alike
                for fn, samples in ((listed, busy), (listing_alone, alone)):
                    start = time.perf_counter()
                    fn()
                    samples.append(time.perf_counter() - start)
                time.sleep(0.1)
            connection.close()

        start = time.perf_counter()
        fill_model_verdicts.apply_async()
        lister = threading.Thread(target=list_while_filling)
        lister.start()
        tiny_keys = [folder_key(p) for p in sorted(tiny_cache.glob("models--*/snapshots/*"))]
        while ModelVerdict.objects.filter(folder_key__in=tiny_keys).count() < args.tiny:
            time.sleep(0.2)
        filled = time.perf_counter() - start
        stop.set()
        lister.join()
        leftover = VerdictRequest.objects.count()
    finally:
        worker.terminate()
        worker.wait(30)
    results["a verdict row per repo, while the worker fills"] = statistics.median(busy) * 1000
    results["listing alone, while the worker fills"] = statistics.median(alone) * 1000
    valid = ModelVerdict.objects.filter(folder_key__in=tiny_keys, valid=True).count()
    print(f"fill: {args.tiny} tiny-Llama repos in {filled:.1f} s, {filled / args.tiny:.2f} s per repo ({valid} valid)")
    print(f"      pending requests after: {leftover}; worker log: {tmp / 'worker.log'}")
    for what, ms in results.items():
        print(f"list of {args.repos} repos, warm, {what}: {ms:.0f} ms")
    print(
        f"      samples while filling: {len(busy)} each; max {max(busy) * 1000:.0f} ms, alone {max(alone) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
