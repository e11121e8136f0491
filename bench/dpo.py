"""DPO benchmark: the portal's DPO run against a plain TRL DPOTrainer script, and a toy preference set learnt.
Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.dpo [--repeats 3] [--pairs 256] [--hidden 128] [--layers 4] [--method lora]

1. Throughput. One tiny Llama (build_tiny_llama(hidden_size, layers)), one set of text pairs of mixed lengths, one
   set of settings (LoRA r 16 all-linear by default, beta 0.1, sigmoid loss, batch 8, max_seq_length 256, 1 epoch,
   lr 5e-4, seed 42, no checkpoint inside train()); each configuration in a fresh process, interleaved, REPEATS
   times:
     baseline: a plain TRL DPOTrainer script (BASELINE_SCRIPT below) given the same pairs and settings;
     portal:   `python -m projects.trainer SPEC.json` with objective dpo, figures from its events;
   real tokens/s = TRL's own count of non-padding tokens (both sequences of every pair) / train() runtime, for
   both. Goal: portal >= 0.95x the baseline. Prompts are shorter than the max prompt length, so the portal cuts
   none and both train on the same tokens.
2. Learning. The toy preference set (projects.datasets.samples: a polite chosen answer, a rude rejected one, 48
   pairs), its last 8 pairs held out; a full fine-tune DPO run of the portal; then the portal's preference check
   (projects.runs.validation.preference_child) on the held-out pairs: how often the base and the tuned model find the
   chosen answer more likely. Goal: from about chance to >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench.training import REPO, child_env

if TYPE_CHECKING:
    from projects.trainer.spec import TrainerSpec

BASELINE_SCRIPT = r"""
import json, os, sys
import torch
torch.set_num_threads(int(os.environ["MTM_TORCH_THREADS"]))
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

cfg = json.loads(open(sys.argv[1]).read())
hp = cfg["hyperparameters"]
cuda = torch.cuda.is_available()
bf16 = cuda and torch.cuda.is_bf16_supported()
lora = cfg["method"] == "lora"
tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
dtype = torch.bfloat16 if (lora and bf16) else torch.float32
model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=dtype)
model.config.use_cache = False
pairs = Dataset.from_list([json.loads(line) for line in open(cfg["data"])])
args = DPOConfig(
    output_dir=cfg["output"], num_train_epochs=hp["epochs"], per_device_train_batch_size=hp["batch_size"],
    learning_rate=hp["learning_rate"], seed=hp["seed"], logging_steps=hp["logging_steps"], save_strategy="no",
    report_to=[], disable_tqdm=True, use_cpu=not cuda, bf16=bf16, fp16=False, activation_checkpointing=False,
    beta=hp["dpo_beta"], loss_type=[hp["dpo_loss_type"]], max_length=hp["max_seq_length"],
    remove_unused_columns=False, dataloader_num_workers=0,
)
peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = DPOTrainer(
    model=model, args=args, train_dataset=pairs, processing_class=tokenizer, peft_config=peft_config if lora else None,
)
result = trainer.train()
print("BASELINE " + json.dumps({
    "train_runtime": result.metrics["train_runtime"], "steps": trainer.state.global_step,
    "real_tokens": int(trainer._total_train_tokens),
}))
"""

_CORPUS = (
    "the quick brown fox jumps over lazy dog model training manager resolves models before anything is queued a "
    "tiny llama learns to prefer polite answers over rude ones thanks please sorry welcome certainly go away"
)
_WORDS = _CORPUS.split(" ")


def mixed_pairs(count: int, seed: int) -> list[dict]:
    """Text pairs whose prompts and answers spread like chat data: most short, some long."""
    rng = random.Random(seed)

    def text(mu: float, cap: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(min(cap, max(2, int(rng.lognormvariate(mu, 0.7))))))

    return [
        {"prompt": text(2.3, 20) + ":", "chosen": " " + text(2.6, 36), "rejected": " " + text(2.6, 36)}
        for _ in range(count)
    ]


def run_baseline(work: Path, model: Path, data: Path, hp: dict, method: str, threads: int) -> dict:
    cfg = work / "baseline.json"
    cfg.write_text(
        json.dumps(
            {
                "model": str(model),
                "data": str(data),
                "output": str(work / "b-out"),
                "hyperparameters": hp,
                "method": method,
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", BASELINE_SCRIPT, str(cfg)],
        cwd=REPO,
        env={**child_env(threads), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"},
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BASELINE ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"baseline failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("BASELINE ") :])
    return {
        "tokens_per_second": result["real_tokens"] / result["train_runtime"],
        "steps": result["steps"],
        "real_tokens": result["real_tokens"],
    }


def run_portal(work: Path, spec: TrainerSpec, threads: int) -> dict:
    from projects.trainer.events import parse_event, trainer_command
    from projects.trainer.spec import write_spec

    spec_path = write_spec(spec, work / "spec.json")
    proc = subprocess.run(trainer_command(spec_path), cwd=REPO, env=child_env(threads), capture_output=True, text=True)
    events = [event for line in proc.stdout.splitlines() if (event := parse_event(line)) is not None]
    finished = [event for event in events if event["event"] == "finished"]
    if proc.returncode != 0 or not finished:
        raise SystemExit(f"portal trainer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = finished[-1]["metrics"]
    return {
        "tokens_per_second": metrics["real_tokens"] / metrics["train_runtime"],
        "steps": metrics["global_step"],
        "real_tokens": metrics["real_tokens"],
        "metrics": metrics,
    }


def learning(work: Path, model: Path, threads: int, steps: int) -> dict:
    from projects.datasets.samples import sample_pairs, write_sample_pairs
    from projects.runs.validation.preference_child import run as preference
    from projects.trainer.spec import TrainerSpec

    held_out = 8
    data = write_sample_pairs(work / "toy.jsonl", 48)
    spec = TrainerSpec(
        model_path=model,
        model_name="bench/tiny-llama",
        dataset_path=data,
        output_dir=work / "toy-out",
        method="full",
        hyperparameters={
            "objective": "dpo",
            "max_steps": steps,
            "learning_rate": 1e-3,
            "batch_size": 8,
            "max_seq_length": 64,
            "logging_steps": 5,
            "save_steps": 1_000_000,
            "seed": 42,
        },
        device="auto",
        held_out_pairs=held_out,
    )
    trained = run_portal(work, spec, threads)
    found = preference(
        {
            "base_model_path": str(model),
            "model_dir": str(work / "toy-out"),
            "adapter_dir": None,
            "tokenizer_dir": str(work / "toy-out"),
            "pairs": sample_pairs(48)[-held_out:],
        }
    )
    return {
        **found,
        "steps": trained["steps"],
        "train_reward_accuracy": trained["metrics"].get("final_reward_accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--learning-steps", type=int, default=30)
    options = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from models_registry.demo import build_tiny_llama
    from projects.datasets.pairs import encode_pairs
    from projects.trainer.device import cpu_threads
    from projects.trainer.spec import TrainerSpec

    threads = cpu_threads()
    hp = {
        "objective": "dpo",
        "epochs": 1,
        "learning_rate": 5e-4,
        "batch_size": 8,
        "max_seq_length": 256,
        "max_prompt_length": 128,
        "dpo_beta": 0.1,
        "dpo_loss_type": "sigmoid",
        "seed": 42,
        "logging_steps": 5,
        "save_steps": 1_000_000,  # train() is timed without checkpoints, as in the baseline
        "precision": "auto",
        "merge_after_training": False,
    }
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    with tempfile.TemporaryDirectory(prefix="mtm-bench-dpo-") as tmp:
        work = Path(tmp)
        model = build_tiny_llama(work / "model", hidden_size=options.hidden, layers=options.layers)
        pairs = mixed_pairs(options.pairs, seed=1)
        data = work / "pairs.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        lengths = encode_pairs(pairs, AutoTokenizer.from_pretrained(model))
        longest_prompt = max(p for p, _, _ in lengths)
        assert longest_prompt < hp["max_prompt_length"], f"prompts up to {longest_prompt} tokens would be cut"
        print(
            f"device: {'cuda:0 (' + gpu + ')' if gpu else 'cpu'}; torch threads: {threads}; python {sys.version.split()[0]}"
        )
        print(
            f"model: tiny Llama hidden={options.hidden} layers={options.layers}; data: {len(pairs)} text pairs, "
            f"prompt tokens median/max {statistics.median(p for p, _, _ in lengths):.0f}/{longest_prompt}, answer "
            f"tokens median/max {statistics.median(c for _, c, _ in lengths):.0f}/{max(max(c, r) for _, c, r in lengths)}; "
            f"{options.method}, batch 8, max_seq_length 256, 1 epoch, beta 0.1, sigmoid"
        )
        results: dict[str, list[dict]] = {"baseline": [], "portal": []}
        for repeat in range(options.repeats):
            results["baseline"].append(run_baseline(work, model, data, hp, options.method, threads))
            spec = TrainerSpec(
                model_path=model,
                model_name="bench/tiny-llama",
                dataset_path=data,
                output_dir=work / f"p{repeat}",
                method=options.method,
                hyperparameters=hp,
                device="auto",
            )
            results["portal"].append(run_portal(work, spec, threads))
            print(
                f"  repeat {repeat + 1}: "
                + ", ".join(f"{k} {v[-1]['tokens_per_second']:.0f} tok/s" for k, v in results.items())
            )
        toy = learning(work, model, threads, options.learning_steps)
    report(results, toy)


def report(results: dict[str, list[dict]], toy: dict) -> None:
    best = {name: max(r["tokens_per_second"] for r in runs) for name, runs in results.items()}
    med = {name: statistics.median(r["tokens_per_second"] for r in runs) for name, runs in results.items()}
    print()
    print("| configuration | steps | real tokens | real tokens/s, best | median | every run |")
    print("|---|---:|---:|---:|---:|---|")
    for name, label in (("baseline", "plain TRL DPOTrainer script"), ("portal", "portal DPO run")):
        runs = results[name]
        each = ", ".join(f"{r['tokens_per_second']:.0f}" for r in runs)
        print(
            f"| {label} | {runs[0]['steps']} | {runs[0]['real_tokens']} | {best[name]:.0f} | {med[name]:.0f} | {each} |"
        )
    print()
    print(
        f"portal / baseline: best {best['portal'] / best['baseline']:.3f}x, median "
        f"{med['portal'] / med['baseline']:.3f}x (goal >= 0.95x)"
    )
    print(
        f"toy preference set, {toy['pairs']} held-out pairs, {toy['steps']} steps (full fine-tune): prefers chosen "
        f"{toy['before']:.0%} before -> {toy['after']:.0%} after (goal >= 90%); mean log-probability margin "
        f"{toy['margin_before']:+.3f} -> {toy['margin_after']:+.3f}; training reward accuracy at the end "
        f"{toy['train_reward_accuracy']}"
    )


if __name__ == "__main__":
    from bench.load_portal import run_as_script

    run_as_script(main)
