"""The judge of the differential test: can transformers itself load and train each model, offline and without a
model's own code? Run as a child process (`python -m tests.transformers_judge < cases.json`), it reads
{"case": {"target": folder or repo id, "cache_dir": ..., "revision": ...}, ...} on stdin and prints
{"case": {"loads": bool, "stage": ..., "error": ...}, ...} as JSON.

"Loads" means what training needs: the config, a tokenizer that encodes text into more than special tokens, a
model whose every weight came from the checkpoint (none missing, none of the wrong shape), loaded as the trainer
loads it (fp32, weights_only), and one training step on CPU, over the sample and every added token of the
tokenizer (training text may hold any of them), that gives a finite loss.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

# Imported at once, not in judge(): tests/unprivileged.py calls judge() as a user who may not read the interpreter's
# own files.
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

SAMPLE = "The quick brown fox jumps over the lazy dog."


def judge(target: str, cache_dir: str | None = None, revision: str | None = None) -> dict:
    common = {"local_files_only": True, "trust_remote_code": False, "cache_dir": cache_dir, "revision": revision}
    path = target
    stage = "config"
    try:
        AutoConfig.from_pretrained(path, **common)
        stage = "tokenizer"
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        ids = tokenizer(SAMPLE)["input_ids"]
        special = set(tokenizer.all_special_ids)
        if not [i for i in ids if i not in special]:
            return {"loads": False, "stage": stage, "error": f"'{SAMPLE}' encodes to special tokens only: {ids}"}
        stage = "model"
        model, info = AutoModelForCausalLM.from_pretrained(
            path, output_loading_info=True, dtype=torch.float32, weights_only=True, **common
        )
        gaps = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if gaps:
            return {"loads": False, "stage": stage, "error": f"weights not loaded: {sorted(map(str, gaps.items()))}"}
        stage = "train"
        loss = one_step(model, tokenizer)
        if not math.isfinite(loss):
            return {"loads": False, "stage": stage, "error": f"the first step's loss is {loss}"}
    except Exception as exc:  # the judge reports every failure of transformers as "does not load"
        return {"loads": False, "stage": stage, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"loads": True, "stage": "done", "error": ""}


def one_step(model, tokenizer) -> float:
    """One optimizer step on CPU, as the trainer takes it (pad set to eos when missing, labels = inputs)."""

    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    added = " ".join(str(t) for t in tokenizer.added_tokens_decoder.values())
    batch = tokenizer([SAMPLE, f"{SAMPLE} {added}"], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.config.use_cache = False
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.simplefilter("ignore")
    from transformers.utils import logging

    logging.set_verbosity_error()
    cases = json.load(sys.stdin)
    print(json.dumps({case: judge(**spec) for case, spec in cases.items()}))


if __name__ == "__main__":
    main()
