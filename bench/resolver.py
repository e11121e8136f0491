"""Resolver benchmark (resolve and listing speed against the repo count). Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.resolver [--repos 2000] [--rounds 3]

Builds REPOS repos x 7 files as huggingface_hub lays them out (blobs, refs/main, relative snapshot symlinks), the
repos of each of the 50 orgs owned by a uid of their own as in a cache shared by a team (the listing lists at most
owner_budget.MAX_REPOS_PER_OWNER repo folders of one owner; run as anyone but root, which cannot give folders away,
the bench raises that cap for its run and says so), and measures, in one run:
  1. listing with validity (ours, in-process memo cleared = cold) vs huggingface_hub.scan_cache_dir (cold too),
     alternating round by round,
  2. resolve() of one model in a cache of 20 repos vs one of REPOS repos (the ratio should stay near 1),
  3. validate-model latency p50/p99 over many names (resolve + full format checks, incl. safetensors headers).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from huggingface_hub import scan_cache_dir

from models_registry import listing, owner_budget
from models_registry.resolution import resolve
from tests.hfcache import add_file, make_safetensors, set_ref

COMMIT = "c0ffee" + "0" * 34
FIRST_OWNER_UID = 61000  # org k's repo folders belong to uid FIRST_OWNER_UID + k (no user needs to exist)


def build_cache(root: Path, repos: int) -> list[str]:
    """The bench cache; run as root, each org's repo folders are given to the org's own uid."""
    names = []
    # Tensors that agree with the config (the checks compare their header shapes with it), so every repo is valid.
    weights = make_safetensors(
        {
            "model.embed_tokens.weight": (32, 16),
            "model.layers.0.mlp.up_proj.weight": (16, 16),
            "lm_head.weight": (32, 16),
        }
    )
    for i in range(repos):
        name = f"org{i % 50}/model-{i}"
        files = {
            "config.json": {"model_type": "llama", "hidden_size": 16, "vocab_size": 32, "num_hidden_layers": 1, "i": i},
            "generation_config.json": {"max_new_tokens": 8},
            "tokenizer.json": {"version": "1.0", "model": {"type": "BPE"}, "i": i},
            "tokenizer_config.json": {"model_max_length": 512},
            "special_tokens_map.json": {"eos_token": "</s>"},
            "README.md": f"# model {i}\n",
            "model.safetensors": weights,
        }
        for rel, data in files.items():
            add_file(root, name, rel, data, COMMIT)
        set_ref(root, name, COMMIT)
        if os.geteuid() == 0:
            os.chown(root / f"models--org{i % 50}--model-{i}", FIRST_OWNER_UID + i % 50, FIRST_OWNER_UID + i % 50)
        names.append(name)
    return names


def timed(fn, rounds: int, setup=None) -> float:
    """Median seconds of `fn` over `rounds` calls; `setup` runs before each, outside the timing."""
    samples = []
    for _ in range(rounds):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def side_by_side(ours, theirs, rounds: int) -> tuple[float, float, list[float], float]:
    """(median of ours, median of theirs, each round's ratio, the ratio of their median CPU times), the two run
    alternately round by round, so that a shared machine's load, which changes by the second, weighs on both sides
    alike. The CPU times (this thread's, user and system) are what load changes least: other jobs on the machine
    lengthen the wall-clock rounds, much less the work each side does."""
    ours_s, theirs_s, ours_cpu, theirs_cpu = [], [], [], []
    for _ in range(rounds):
        listing.forget()
        cpu = time.thread_time()
        ours_s.append(timed(ours, 1))
        ours_cpu.append(time.thread_time() - cpu)
        cpu = time.thread_time()
        theirs_s.append(timed(theirs, 1))
        theirs_cpu.append(time.thread_time() - cpu)
    return (
        statistics.median(ours_s),
        statistics.median(theirs_s),
        [t / o for o, t in zip(ours_s, theirs_s, strict=True)],
        statistics.median(theirs_cpu) / statistics.median(ours_cpu),
    )


def cold_listing(cache: Path, store: Path | None = None) -> int:
    """List `cache` as a process that has not listed it yet; the caller runs listing.forget() before."""
    return len(listing.list_cached(cache, store))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repos", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mtm.settings")  # the checks read a few settings
    if os.geteuid() != 0:
        owner_budget.MAX_REPOS_PER_OWNER = max(owner_budget.MAX_REPOS_PER_OWNER, args.repos)
        print(f"not root: every repo is this user's, so one owner may have {args.repos} repo folders listed")

    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        t0 = time.perf_counter()
        names = build_cache(big, args.repos)
        build_cache(small, 20)
        print(f"built {args.repos} repos x 7 files in {time.perf_counter() - t0:.1f}s")

        listing.forget()
        assert cold_listing(big) == args.repos  # also imports what the checks import once per process
        ours, theirs, ratios, cpu_ratio = side_by_side(
            lambda: cold_listing(big), lambda: scan_cache_dir(big), args.rounds
        )
        store = Path(tmp) / "listing.json"
        listing.forget()
        cold_listing(big, store)  # writes the store
        assert store.exists()
        from_store = timed(lambda: cold_listing(big, store), args.rounds, setup=listing.forget)
        warm = timed(lambda: listing.list_cached(big), args.rounds)
        print(
            f"listing, cold: ours {ours * 1000:.0f} ms, scan_cache_dir {theirs * 1000:.0f} ms, "
            f"speed-up {theirs / ours:.1f}x (goal >= 10x); per-round ratios "
            f"{', '.join(f'{r:.1f}' for r in ratios)}; in CPU time {cpu_ratio:.1f}x; load {os.getloadavg()[0]:.1f}"
        )
        print(
            f"listing, new process with the persisted listing (3 stats and an owner lstat a repo, one JSON load): "
            f"{from_store * 1000:.0f} ms, {theirs / from_store:.1f}x scan_cache_dir"
        )
        print(f"listing, warm (in-process memo: 3 stats and an owner lstat a repo): {warm * 1000:.0f} ms")

        target = "org7/model-7"
        first = resolve(target, cache_dir=small)  # also imports what the checks import once per process
        assert first.valid, first.errors  # the figures below are for the accepting path, every check run

        def resolve_many(cache: Path) -> None:
            for _ in range(200):
                resolve(target, cache_dir=cache)

        at_small = timed(lambda: resolve_many(small), args.rounds) / 200
        at_big = timed(lambda: resolve_many(big), args.rounds) / 200
        print(
            f"resolve one model: {at_small * 1e6:.0f} us with 20 repos, {at_big * 1e6:.0f} us with {args.repos}; "
            f"ratio {at_big / at_small:.2f} (goal <= 1.5)"
        )

        rng = random.Random(0)
        samples = []
        for _ in range(args.calls):
            name = rng.choice(names) if rng.random() < 0.8 else f"missing/model-{rng.randrange(10**6)}"
            start = time.perf_counter()
            resolve(name, cache_dir=big).model_dump(mode="json")
            samples.append(time.perf_counter() - start)
        print(
            f"validate-model over {args.calls} calls (80% present): p50 {percentile(samples, 0.5) * 1000:.2f} ms, "
            f"p99 {percentile(samples, 0.99) * 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
