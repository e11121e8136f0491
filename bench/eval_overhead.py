"""Evaluation overhead benchmark: training with an eval set measured every 50 steps vs the same training without.
Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.eval_overhead [--repeats 3] [--rows 768] [--epochs 2] [--eval-steps 50]

The tiny Llama and the mixed-length text rows of bench/training.py. Both configurations train on exactly the same
rows: the eval run reads the whole file with eval_fraction 0.1 (the trainer holds out the seeded 10 %), the plain
run reads a file of the other 90 % only (projects.datasets.eval_split picks the same rows). Each runs in a fresh
`python -m projects.trainer` child, interleaved, REPEATS times. Real tokens/s = real (non-padding) training tokens
/ `train()` runtime, which includes the evaluations: that ratio is the overhead a member pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench.training import mixed_rows, run_portal

EVAL_FRACTION = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=768)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--eval-steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    options = parser.parse_args()

    import torch

    from models_registry.demo import build_tiny_llama
    from projects.datasets.eval_split import split_rows
    from projects.trainer.device import cpu_threads
    from projects.trainer.spec import TrainerSpec

    threads = cpu_threads()
    hp = {
        "epochs": options.epochs,
        "learning_rate": 1e-3,
        "batch_size": options.batch_size,
        "max_seq_length": options.max_seq_length,
        "seed": 42,
        "logging_steps": 5,
        "save_steps": 1_000_000,  # no checkpoint inside train(): only the evaluations differ
        "precision": "auto",
        "eval_steps": options.eval_steps,
    }
    with tempfile.TemporaryDirectory(prefix="mtm-bench-eval-") as tmp:
        work = Path(tmp)
        model = build_tiny_llama(work / "model", hidden_size=options.hidden, layers=options.layers)
        rows = mixed_rows(options.rows, seed=1)
        train_rows, eval_rows = split_rows(rows, EVAL_FRACTION, hp["seed"])
        full, train_only = work / "all.jsonl", work / "train.jsonl"
        full.write_text("".join(json.dumps(r) + "\n" for r in rows))
        train_only.write_text("".join(json.dumps(r) + "\n" for r in train_rows))

        def spec(name: str, with_eval: bool) -> TrainerSpec:
            return TrainerSpec(
                model_path=model,
                model_name="bench/tiny-llama",
                dataset_path=full if with_eval else train_only,
                output_dir=work / name,
                method="full",
                hyperparameters={**hp, "eval_fraction": EVAL_FRACTION if with_eval else 0.0},
                device="auto",
            )

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        print(
            f"device: {'cuda:0 (' + gpu + ')' if gpu else 'cpu'}; torch threads: {threads}; python {sys.version.split()[0]}"
        )
        print(
            f"model: tiny Llama hidden={options.hidden} layers={options.layers}; {len(train_rows)} training rows, "
            f"{len(eval_rows)} eval rows; batch {options.batch_size}, max_seq_length {options.max_seq_length}, "
            f"{options.epochs:g} epochs, eval every {options.eval_steps} steps, full fine-tune"
        )
        results: dict[str, list[dict]] = {"plain": [], "eval": []}
        for repeat in range(options.repeats):
            results["plain"].append(run_portal(work, spec(f"p{repeat}", False), threads))
            results["eval"].append(run_portal(work, spec(f"e{repeat}", True), threads))
            print(
                f"  repeat {repeat + 1}: "
                + ", ".join(f"{k} {v[-1]['tokens_per_second']:.0f} tok/s" for k, v in results.items())
            )
    report(results)


def report(results: dict[str, list[dict]]) -> None:
    best = {name: max(r["tokens_per_second"] for r in runs) for name, runs in results.items()}
    med = {name: statistics.median(r["tokens_per_second"] for r in runs) for name, runs in results.items()}
    print()
    print("| configuration | steps | real tokens | real tokens/s, best | median | every run |")
    print("|---|---:|---:|---:|---:|---|")
    for name, label in (("plain", "1. no eval set"), ("eval", "2. eval set (10 %), every 50 steps")):
        runs = results[name]
        each = ", ".join(f"{r['tokens_per_second']:.0f}" for r in runs)
        print(
            f"| {label} | {runs[0]['steps']} | {runs[0]['real_tokens']} | {best[name]:.0f} | {med[name]:.0f} | {each} |"
        )
    print()
    print(
        f"eval / plain: best {best['eval'] / best['plain']:.3f}x, median {med['eval'] / med['plain']:.3f}x "
        "(real training tokens per second of train(), evaluations included)"
    )


if __name__ == "__main__":
    main()
