"""Memory and time of the worker's reads of a dataset of tiny rows. Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.dataset_rows [--size-mb 1] [--big-mb 0] [--request-only] [--json]

A file of tiny rows costs per row, not per byte: the figures are for SIZE_MB MiB files of the smallest rows a
dataset can have, a CSV of prompt/completion rows (`q1,a1`, about 6 bytes a row) and a JSON Lines file of text rows
(`{"text": "a1"}`, about 16 bytes a row), with the demo model's tokenizer (models_registry.demo, built in a temp
folder). Each measurement runs in a fresh Python process (Django set up, the tokenizer loaded and every module
warmed up by the same read of a 3-row file) that reads its own RSS as its baseline, then samples VmRSS every 10 ms
(and VmHWM, reset first where the kernel allows) while it runs once; then the same call again under tracemalloc,
for the peak of what Python allocated:
  - resolve: `inspect_dataset(path, tokenizer, 512, full=True)`, what the resolve stage runs on the dataset (every
    row read, checked and tokenized);
  - first row: what the validation stage reads of the run's snapshot for its prompt (the first row; the held-out
    last row is the `last row` line): `load_rows` before, `projects.datasets.streaming` after.
And what the row bound costs a request: `read_dataset(path)`, the bounded read of the form's check, the save and
the upload (2,000 rows), on files one row over the default bound (MTM_DATASET_MAX_ROWS, 2,000,000 rows): tiny CSV
and JSON Lines rows, and a CSV whose records span three lines (quoted line breaks: counted through the csv module);
with --big-mb, also on a JSON Lines file of that many MiB of 1 KB rows, under the bound (its line breaks are counted).
--request-only measures only the requests. Nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also runnable as `python bench/dataset_rows.py`

from bench.upload_rss import PeakSampler, kib  # noqa: E402

MIB = 1024 * 1024
MODES = ("resolve", "first row", "last row")
OVER_THE_BOUND = 2_000_001


def write_tiny_csv(path: Path, size: int) -> int:
    rows = ["prompt,completion\n"]
    written, number = len(rows[0]), 0
    while written < size:
        row = f"q{number % 10},a{number % 7}\n"
        rows.append(row)
        written += len(row)
        number += 1
    path.write_text("".join(rows))
    return number


def write_tiny_jsonl(path: Path, size: int) -> int:
    rows, written, number = [], 0, 0
    while written < size:
        row = json.dumps({"text": f"a{number % 10}"}) + "\n"
        rows.append(row)
        written += len(row)
        number += 1
    path.write_text("".join(rows))
    return number


def write_over_the_bound(folder: Path) -> dict[str, Path]:
    files = {
        "over.csv": "prompt,completion\n" + "q,a\n" * OVER_THE_BOUND,
        "over.jsonl": '{"text": "a"}\n' * OVER_THE_BOUND,
        "over-3-lines.csv": "prompt,completion\n" + 'q,"a\nb\nc"\n' * OVER_THE_BOUND,
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return {name: folder / name for name in files}


def write_big_jsonl(path: Path, size_mb: int) -> Path:
    row = json.dumps({"prompt": "why " * 120, "completion": " because" * 70}) + "\n"
    block = row * 1000
    with path.open("w") as out:
        for _ in range(size_mb * MIB // len(block)):
            out.write(block)
    return path


def _run(mode: str, dataset: Path, tokenizer) -> str:
    if mode == "request":
        from projects.datasets.report import read_dataset

        report = read_dataset(dataset).report
        return f"{report.rows} rows read, errors: {[problem.code for problem in report.errors]}"
    if mode == "resolve":
        from projects.datasets import inspect_dataset

        report = inspect_dataset(dataset, tokenizer, 512, full=True, model="'demo'")
        stats = report.token_stats
        return f"{report.rows} rows, {len(report.errors)} errors, tokens p50 {stats.p50 if stats else None}"
    try:  # the streaming reads of the snapshot; before them, the validation stage read every row with load_rows
        from projects.datasets import streaming
    except ImportError:
        from projects.datasets import load_rows

        rows = load_rows(dataset)
        return f"{len(rows)} rows held, {'first' if mode == 'first row' else 'last'} row used"
    if mode == "first row":
        return f"first row {streaming.first_rows(dataset, 1)[0]}"
    return f"last row {streaming.last_rows(dataset, 1)[0]}"


def child(mode: str, dataset: str, model_dir: str) -> dict:
    import django

    django.setup()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    path = Path(dataset)
    small = path.with_name(f"warm-up{path.suffix}")
    if path.suffix == ".csv":
        small.write_text("prompt,completion\nq,a\nq,b\nq,c\n")
    else:
        small.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n')
    _run(mode, small, tokenizer)
    pid = os.getpid()
    time.sleep(0.3)
    baseline = kib(pid, "VmRSS") or 0
    with PeakSampler(pid) as sampler:
        started = time.monotonic()
        answer = _run(mode, path, tokenizer)
        seconds = time.monotonic() - started
    tracemalloc.start()
    _run(mode, path, tokenizer)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "mode": mode,
        "file": path.name,
        "baseline_mb": round(baseline / 1024, 1),
        "rss_growth_mb": round((sampler.peak - baseline) / 1024, 1),
        "traced_peak_mb": round(traced_peak / MIB, 1),
        "seconds": round(seconds, 2),
        "answer": answer,
    }


def measure(mode: str, dataset: Path, model_dir: Path) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mtm.settings", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.dataset_rows", "--child", mode, str(dataset), str(model_dir)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{mode} on {dataset.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--big-mb", type=int, default=0)
    parser.add_argument("--request-only", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DATASET", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from models_registry.demo import build_tiny_llama

    with tempfile.TemporaryDirectory(prefix="mtm-bench-rows-") as temp:
        folder = Path(temp)
        model_dir = build_tiny_llama(folder / "model")
        size = int(args.size_mb * MIB)
        files = {"csv": folder / "tiny.csv", "jsonl": folder / "tiny.jsonl"}
        counts = {"csv": write_tiny_csv(files["csv"], size), "jsonl": write_tiny_jsonl(files["jsonl"], size)}
        results = []
        for kind, dataset in files.items():
            for mode in () if args.request_only else MODES:
                result = measure(mode, dataset, model_dir)
                result["rows"] = counts[kind]
                results.append(result)
                print(
                    f"{dataset.name:11} {counts[kind]:>8,} rows  {mode:9}  RSS +{result['rss_growth_mb']:>6} MB  "
                    f"traced peak {result['traced_peak_mb']:>6} MB  {result['seconds']:>6} s  ({result['answer']})",
                    flush=True,
                )
        requests = write_over_the_bound(folder)
        if args.big_mb:
            requests["big.jsonl"] = write_big_jsonl(folder / "big.jsonl", args.big_mb)
        for name, dataset in requests.items():
            result = measure("request", dataset, model_dir)
            result["rows"] = OVER_THE_BOUND if name.startswith("over") else None
            results.append(result)
            size = dataset.stat().st_size / MIB
            print(
                f"{name:16} {size:5.1f} MiB  request  RSS +{result['rss_growth_mb']:>6} MB  "
                f"traced peak {result['traced_peak_mb']:>6} MB  {result['seconds']:>6} s  ({result['answer']})",
                flush=True,
            )
        if args.json:
            print(json.dumps(results))


if __name__ == "__main__":
    main()
