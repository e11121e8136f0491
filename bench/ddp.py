"""DDP benchmark: a run on 2 CPU processes (torchrun, gloo) vs 1 process with the same CPU threads in all.
Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.ddp [--threads 2] [--steps 30] [--repeats 3] [--hidden 128] [--layers 4]

One tiny Llama (build_tiny_llama(hidden_size=128, layers=4)), one mixed-length dataset; both configurations run the
real trainer as the pipeline starts it (`python -m projects.trainer SPEC.json`, or torchrun with
`--nproc_per_node 2` in front of it), each in fresh processes, interleaved, REPEATS times (medians reported):
  1. one:  1 process, MTM_TORCH_THREADS=THREADS, batch_size 8;
  2. ddp:  2 processes, MTM_TORCH_THREADS=THREADS (each rank takes THREADS/2), batch_size 4: the same effective
           batch (2 × 4 = 8), the same examples per step;
  3. one-1t: 1 process with 1 thread, batch_size 8: a control for what the thread count alone does on this machine
           (on a loaded machine torch's threads in one process wait for each other).
Figures from the trainer's own "finished" event: real (non-padding) tokens of every rank per second since the first
step ended (start-up and the first step excluded), and the wall time from launch to exit. The ratio ddp/one is the
figure to read: on a machine whose cores are all given to the single process, two processes can only add the cost of
the all-reduce; DDP pays off with more devices, not with the same threads split.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_TEXT = (
    "the quick brown fox jumps over a lazy dog while the portal resolves models before anything is queued and "
    "two processes share one batch of short sentences about tokens devices and gradients"
)
WORDS = _TEXT.split(" ")


def dataset(path: Path, rows: int = 512, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(rows):
            prompt = " ".join(rng.choices(WORDS, k=rng.randint(4, 24)))
            completion = " " + " ".join(rng.choices(WORDS, k=rng.randint(4, 40)))
            out.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return path


def run_once(root: Path, name: str, devices: int, batch_size: int, threads: int, steps: int) -> dict:
    from projects.trainer.events import parse_event, trainer_command
    from projects.trainer.spec import TrainerSpec, write_spec

    out = root / f"out-{name}-{time.monotonic_ns()}"
    spec = TrainerSpec(
        model_path=root / "model",
        model_name="bench/tiny-llama",
        revision="0" * 40,
        dataset_path=root / "data.jsonl",
        output_dir=out,
        method="full",
        hyperparameters={
            "max_steps": steps,
            "batch_size": batch_size,
            "devices": devices,
            "learning_rate": 1e-3,
            "max_seq_length": 128,
            "logging_steps": 10,
            "save_steps": 100_000,
            "precision": "fp32",
        },
        device="cpu",
    )
    spec_path = write_spec(spec, root / f"{name}.json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "MTM_TORCH_THREADS": str(threads)}
    clock = time.monotonic()
    proc = subprocess.run(
        trainer_command(spec_path, sys.executable, devices), cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - clock
    events = [e for e in map(parse_event, proc.stdout.splitlines()) if e]
    finished = next((e for e in events if e["event"] == "finished"), None)
    if proc.returncode != 0 or finished is None:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    metrics = finished["metrics"]
    return {
        "steady_tokens_per_second": metrics["steady_tokens_per_second"],
        "tokens_per_second": metrics["tokens_per_second"],
        "real_tokens": metrics["real_tokens"],
        "final_loss": metrics["final_loss"],
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from models_registry.demo import build_tiny_llama

    root = Path(tempfile.mkdtemp(prefix="mtm-bench-ddp-"))
    build_tiny_llama(root / "model", hidden_size=args.hidden, layers=args.layers)
    dataset(root / "data.jsonl")
    # name: (processes, batch size per process, threads in all)
    configs = {"one": (1, 8, args.threads), "ddp": (2, 4, args.threads), "one-1t": (1, 8, 1)}
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, (devices, batch, threads) in configs.items():
            results[name].append(run_once(root, name, devices, batch, threads, args.steps))
    print(f"threads in all: {args.threads}; steps: {args.steps}; repeats: {args.repeats}; load: {os.getloadavg()}")
    medians = {}
    for name, runs in results.items():
        medians[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        row = medians[name]
        print(
            f"{name:>6}: {row['steady_tokens_per_second']:8.0f} real tok/s steady, {row['tokens_per_second']:8.0f} "
            f"over train(), wall {row['wall_seconds']:6.1f} s, real tokens {row['real_tokens']:.0f}, "
            f"final loss {row['final_loss']:.4f}"
        )
    ratio = medians["ddp"]["steady_tokens_per_second"] / medians["one"]["steady_tokens_per_second"]
    wall = medians["ddp"]["wall_seconds"] / medians["one"]["wall_seconds"]
    print(f"ddp/one: steady tokens/s x{ratio:.2f}; wall time x{wall:.2f}")
    single = medians["one-1t"]["steady_tokens_per_second"] / medians["one"]["steady_tokens_per_second"]
    print(f"one-1t/one: steady tokens/s x{single:.2f} (one process with 1 thread vs {args.threads})")


if __name__ == "__main__":
    main()
