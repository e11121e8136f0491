"""The memory pre-flight's estimate vs the peak a real run allocates on a GPU: `torch.cuda.max_memory_allocated` for 3
configurations, goal within ±15 %. Not a test: prints figures for BENCHMARKS.md. Needs a CUDA GPU (about 24 GiB for
the default configurations) and no network.

    .venv/bin/python -m bench.memory_gpu            # build the model, measure the 3 configurations (GPU)
    .venv/bin/python -m bench.memory_gpu --list --hidden 256 --layers 2   # estimates only, a small model (any machine)

A Llama-shaped model (hidden 2048, 16 layers, intermediate 5632, vocab 32000, about 1.1 B parameters, random
weights, saved as bf16 safetensors with the portal's tiny trained tokenizer) is written to a temporary folder. Each
configuration runs in a fresh process that calls the trainer itself (projects.trainer.run.run_training, exactly as
`python -m projects.trainer` does) for a few optimizer steps on packed rows (every row max_seq_length tokens, as the
estimate assumes), then prints torch.cuda.max_memory_allocated(). Compared with the estimate less its CUDA context
allowance (max_memory_allocated does not see the context); the activation term alone is the measured peak less
the exact terms (weights, gradients, optimizer states).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3
MODEL = {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 5632, "vocab_size": 32000}
CONFIGS = {
    "full bf16, batch 4 × 512": {"method": "full", "batch_size": 4, "max_seq_length": 512},
    "LoRA r16 all-linear, batch 8 × 1024": {"method": "lora", "batch_size": 8, "max_seq_length": 1024, "lora_r": 16},
    "full, checkpointing, batch 8 × 1024": {
        "method": "full",
        "batch_size": 8,
        "max_seq_length": 1024,
        "gradient_checkpointing": True,
    },
}
CHILD = r"""
import json, sys, torch
from projects.trainer.run import run_training
from pathlib import Path
from projects.trainer.spec import read_spec
spec = read_spec(Path(sys.argv[1]))
code = run_training(spec, lambda kind, **fields: None, imports_seconds=0.0)
print("PEAK " + json.dumps({"code": code, "max_memory_allocated": torch.cuda.max_memory_allocated()}))
"""


def build_model(dest: Path, hidden: int, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from models_registry.demo import build_tokenizer

    shape = {**MODEL, "hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": hidden * 11 // 4}
    config = LlamaConfig(
        **shape, num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048, tie_word_embeddings=False
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest)
    build_tokenizer().save_pretrained(dest)
    return dest


def dataset(path: Path, rows: int = 2000) -> Path:
    rng = random.Random(0)
    text = "the quick brown fox jumps over a lazy dog and tokens fill every packed row to the end"
    words = text.split(" ")
    with path.open("w") as out:
        for _ in range(rows):
            out.write(json.dumps({"text": " ".join(rng.choices(words, k=400))}) + "\n")
    return path


def estimates(model_dir: Path) -> dict[str, object]:
    from projects.hyperparameters import Hyperparameters
    from projects.runs.scheduling.memory_estimate import estimate, read_model_shape, setup_for

    shape = read_model_shape(model_dir)
    found = {}
    for name, config in CONFIGS.items():
        values = {k: v for k, v in config.items() if k != "method"}
        found[name] = estimate(shape, setup_for(config["method"], Hyperparameters(**values), on_gpu=True, bf16=True))
    return found


def measure(root: Path, name: str, config: dict) -> int:
    from projects.trainer.spec import TrainerSpec, write_spec

    values = {k: v for k, v in config.items() if k != "method"}
    spec = TrainerSpec(
        model_path=root / "model",
        model_name="bench/llama-1b",
        revision="0" * 40,
        dataset_path=root / "data.jsonl",
        output_dir=root / f"out-{len(name)}-{config['batch_size']}",
        method=config["method"],
        hyperparameters={
            **values,
            "max_steps": 3,
            "packing": True,
            "precision": "bf16",
            "save_steps": 100_000,
            "merge_after_training": False,
        },
        device="cuda",
    )
    spec_path = write_spec(spec, root / "spec.json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec_path)], cwd=REPO, env=env, capture_output=True, text=True
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PEAK ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[5:])["max_memory_allocated"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--list", action="store_true", help="print the configurations and estimates only (no GPU)")
    parser.add_argument("--hidden", type=int, default=MODEL["hidden_size"])
    parser.add_argument("--layers", type=int, default=MODEL["num_hidden_layers"])
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from projects.runs.scheduling.memory_estimate import CUDA_CONTEXT_BYTES

    if not args.list and not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU here: this benchmark measures torch.cuda.max_memory_allocated. Use --list.")
    root = Path(tempfile.mkdtemp(prefix="mtm-bench-memory-"))
    build_model(root / "model", args.hidden, args.layers)
    dataset(root / "data.jsonl")
    found = estimates(root / "model")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    for name, need in found.items():
        exact = need.weights_bytes + need.gradients_bytes + need.optimizer_bytes
        predicted = need.total_bytes - CUDA_CONTEXT_BYTES  # what max_memory_allocated can see
        print(
            f"{name}: estimate {need.total_bytes / GIB:.2f} GiB (without the CUDA context {predicted / GIB:.2f}; "
            f"exact terms {exact / GIB:.2f}; activations {need.activations_bytes / GIB:.2f})"
        )
        if args.list:
            continue
        peak = measure(root, name, CONFIGS[name])
        activations = peak - exact
        print(
            f"    measured max_memory_allocated {peak / GIB:.2f} GiB: estimate/measured x{predicted / peak:.3f}; "
            f"activation term estimate/measured x{need.activations_bytes / max(1, activations):.3f}"
        )


if __name__ == "__main__":
    main()
