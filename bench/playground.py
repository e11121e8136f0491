"""Playground benchmark: a warm playground answer against a plain `model.generate` script, same model and prompt,
same run. Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.playground [--repeats 5] [--max-new-tokens 200] [--hidden 256] [--layers 4]

One Llama with random weights and the demo tokenizer (build_tiny_llama(hidden_size, layers)) laid into a temporary
HF cache; a fresh portal state (SQLite and var/ in a temp folder; Redis when one answers at REDIS_URL or
127.0.0.1:6379, else the embedded filesystem broker) and a real `manage.py runworker --cpu --inference`. Interleaved,
REPEATS times (medians reported):
  1. baseline: BASELINE_SCRIPT in a fresh process: load once, then model.generate (greedy) with a streamer that
     notes the first token; time to first token from the call, tokens/s = (new tokens - 1) / (end - first token);
  2. playground, warm: the message sent through the service the page and the API use (send_message), answered by
     the worker with the model already loaded; time to first token from the message's creation (queue, broker and
     the row's first write included), tokens/s from the row, the same definition as the baseline.
     Goal: tokens/s >= 0.9x the baseline.
And the cold first message (a new conversation on a new model folder: the worker loads it), load time included.
Both sides: the model's chat template, greedy, the same max new tokens, OMP/torch threads = --threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Tell me about training a language model on a small GPU server:"

BASELINE_SCRIPT = r"""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
device = "cuda:0" if torch.cuda.is_available() else "cpu"  # as the playground worker picks it
model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype="auto").to(device).eval()
inputs = tokenizer.apply_chat_template(
    [{"role": "user", "content": cfg["prompt"]}], add_generation_prompt=True, return_tensors="pt", return_dict=True
).to(device)

class FirstToken:
    def __init__(self):
        self.calls, self.first = 0, None
    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first = time.perf_counter()
    def end(self):
        pass

for _ in range(cfg["repeats"]):
    streamer = FirstToken()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=cfg["max_new_tokens"], do_sample=False, temperature=None,
                             top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id, streamer=streamer)
    end = time.perf_counter()
    new = int(out.shape[1] - inputs["input_ids"].shape[1])
    print("BASELINE " + json.dumps({"ttft": streamer.first - start, "tps": (new - 1) / (end - streamer.first),
                                     "new_tokens": new}), flush=True)
"""


def redis_url() -> str:
    sys.path.insert(0, str(REPO))
    from tests.redis_server import answers

    for url in filter(None, (os.environ.get("REDIS_URL"), "redis://127.0.0.1:6379/13")):
        if answers(url):
            return url
    return ""


def prepare(tmp: Path, threads: int) -> dict[str, str]:
    env = {
        **os.environ,
        "MTM_VAR_DIR": str(tmp / "var"),
        "DATABASE_URL": f"sqlite:///{tmp / 'var' / 'bench.sqlite3'}",
        "HF_HUB_CACHE": str(tmp / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "MTM_WORKER_REPORT_SECONDS": "2",
        "MTM_PLAYGROUND_MESSAGES_PER_MINUTE": "0",
        "MTM_PLAYGROUND_MAX_NEW_TOKENS": "1024",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("HF_HOME", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    url = redis_url()
    if url:
        env["REDIS_URL"] = url
    else:
        env.pop("REDIS_URL", None)
    os.environ.clear()
    os.environ.update(env)
    return env


def run_baseline(model: Path, repeats: int, max_new_tokens: int, threads: int) -> list[dict]:
    cfg = {
        "model": str(model),
        "prompt": PROMPT,
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "threads": threads,
    }
    done = subprocess.run(
        [sys.executable, "-c", BASELINE_SCRIPT, json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    return [json.loads(line[9:]) for line in done.stdout.splitlines() if line.startswith("BASELINE ")]


def wait(generation_id: int, timeout: float = 600):
    from playground.models import Generation

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        generation = Generation.objects.get(pk=generation_id)
        if not generation.is_live:
            return generation
        time.sleep(0.02)
    raise SystemExit(f"generation {generation_id} did not end within {timeout}s")


def ask(conversation, user, max_new_tokens: int) -> dict:
    from mtm.audit import Actor
    from playground.services import send_message

    params = {"temperature": 0, "max_new_tokens": max_new_tokens}
    generation = wait(send_message(conversation, PROMPT, params, actor=Actor.command_line(user)).pk)
    if generation.status != "succeeded":
        raise SystemExit(f"the playground failed: {generation.error_code}: {generation.error_message}")
    return {
        "ttft": generation.time_to_first_token,
        "tps": generation.tokens_per_second,
        "new_tokens": generation.new_tokens,
        "cold": generation.cold,
        "load_seconds": generation.load_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mtm-bench-playground-"))
    worker = None
    try:
        env = prepare(tmp, args.threads)
        sys.path.insert(0, str(REPO))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mtm.settings")
        import django

        django.setup()
        from django.contrib.auth.models import User
        from django.core.management import call_command

        from models_registry.demo import build_tiny_llama, install_into_cache
        from mtm.audit import Actor
        from playground.models import Conversation, TargetKind
        from playground.services import start_conversation

        call_command("migrate", verbosity=0)
        folder = build_tiny_llama(tmp / "model", hidden_size=args.hidden, layers=args.layers)
        install_into_cache(folder, tmp / "hub", "bench/warm-model")
        install_into_cache(folder, tmp / "hub", "bench/cold-model", commit="c" * 40)
        user = User.objects.create_user("bench")
        with open(tmp / "worker.log", "wb") as log:  # the child keeps its own copy of the descriptor
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "runworker", "--cpu", "--inference", "--name", "bench-playground"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        from playground.services import Refused, _a_worker_listens

        deadline = time.monotonic() + 120
        while True:
            try:
                _a_worker_listens()
                break
            except Refused:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit(f"the worker did not report:\n{(tmp / 'worker.log').read_text()[-3000:]}")
                time.sleep(0.2)

        actor = Actor.command_line(user)
        cold_chat = start_conversation(actor=actor, model_name="bench/cold-model")
        warm_chat = start_conversation(actor=actor, model_name="bench/warm-model")
        cold = ask(cold_chat, user, args.max_new_tokens)  # the worker's first message: load included
        ask(warm_chat, user, args.max_new_tokens)  # loads the warm model (not counted)
        baseline, warm = [], []
        for _ in range(args.repeats):
            baseline += run_baseline(folder, 1, args.max_new_tokens, args.threads)
            fresh = Conversation.objects.create(owner=user, kind=TargetKind.MODEL, model_name="bench/warm-model")
            warm.append(ask(fresh, user, args.max_new_tokens))
        assert all(not w["cold"] for w in warm)
        median = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
        result = {
            "model": f"build_tiny_llama(hidden_size={args.hidden}, layers={args.layers})",
            "broker": "redis" if env.get("REDIS_URL") else "filesystem",
            "threads": args.threads,
            "max_new_tokens": args.max_new_tokens,
            "new_tokens": [r["new_tokens"] for r in warm],
            "baseline_new_tokens": [r["new_tokens"] for r in baseline],
            "baseline_ttft_s": median(baseline, "ttft"),
            "baseline_tps": median(baseline, "tps"),
            "warm_ttft_s": median(warm, "ttft"),
            "warm_tps": median(warm, "tps"),
            "cold_ttft_s": cold["ttft"],
            "cold_load_s": cold["load_seconds"],
            "cold_tps": cold["tps"],
        }
        result["tps_ratio"] = result["warm_tps"] / result["baseline_tps"]
        print(json.dumps(result, indent=2))
        print(
            f"warm playground {result['warm_tps']:.1f} tokens/s vs model.generate {result['baseline_tps']:.1f}: "
            f"{result['tps_ratio']:.2f}x (goal >= 0.9x); time to first token {result['warm_ttft_s'] * 1000:.0f} ms "
            f"vs {result['baseline_ttft_s'] * 1000:.0f} ms; cold first message {result['cold_ttft_s']:.2f} s "
            f"(load {result['cold_load_s']:.2f} s)"
        )
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
