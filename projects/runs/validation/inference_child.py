"""The loading and inference tests, run in a child process (`python -m projects.runs.validation.child inference
SPEC.json`).

SPEC: {"model_dir": path|null, "adapter_dir": path|null, "base_model_path": path|null, "tokenizer_dir": path,
       "prompt": str, "max_new_tokens": int, "trust_remote_code": bool, "before_after": null|{...}}
Result: {"load": {passed, seconds, detail}, "inference": {passed, seconds, detail, text}, "before_after": {...}
(with a "before_after" spec; projects.runs.validation.before_after)}.
"""

from __future__ import annotations

import time
import traceback

from projects.runs.validation.quality import judge_sample


def _load(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = bool(spec.get("trust_remote_code"))
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"], trust_remote_code=trust)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.get("model_dir"):
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], trust_remote_code=trust)
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(spec["base_model_path"], trust_remote_code=trust)
        model = PeftModel.from_pretrained(base, spec["adapter_dir"])
    return tokenizer, model.to(device).eval(), device


def _generate(spec: dict, tokenizer, model, device: str) -> tuple[str, list[int]]:
    import torch

    inputs = tokenizer(spec["prompt"], return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=int(spec.get("max_new_tokens", 32)),
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    new = out[0][inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True), [int(token) for token in new]


def run(spec: dict) -> dict:
    result: dict = {}
    start = time.monotonic()
    try:
        tokenizer, model, device = _load(spec)
    except Exception as exc:
        result["load"] = {
            "passed": False,
            "seconds": round(time.monotonic() - start, 3),
            "detail": f"Loading failed: {type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        result["inference"] = {
            "passed": False,
            "seconds": 0.0,
            "detail": "Not run: the model did not load.",
            "text": "",
        }
        return result
    result["load"] = {
        "passed": True,
        "seconds": round(time.monotonic() - start, 3),
        "detail": f"Loaded {type(model).__name__} on {device}.",
    }
    start = time.monotonic()
    try:
        text, token_ids = _generate(spec, tokenizer, model, device)
    except Exception as exc:
        result["inference"] = {
            "passed": False,
            "seconds": round(time.monotonic() - start, 3),
            "detail": f"Generation failed: {type(exc).__name__}: {exc}",
            "text": "",
            "traceback": traceback.format_exc(),
        }
        return result
    seconds = round(time.monotonic() - start, 3)
    verdict = judge_sample(
        token_ids,
        text,
        set(getattr(tokenizer, "all_special_ids", []) or []),
        decode_one=lambda token: tokenizer.decode([token]),
    )
    detail = verdict.detail[:-1] + f" in {seconds:.2f}s." if verdict.passed else verdict.detail
    result["inference"] = {
        "passed": verdict.passed,
        "seconds": seconds,
        "detail": detail,
        "warning": verdict.warning,
        "text": text,
    }
    if spec.get("before_after"):
        result["before_after"] = _before_after(spec, tokenizer, model, device)
    return result


def _before_after(spec: dict, tokenizer, model, device: str) -> dict:
    """Base vs fine-tuned; a failure here is reported in the comparison, never fails the checks."""
    from projects.runs.validation.before_after import compare

    wanted = spec["before_after"]

    def load_base():
        from transformers import AutoModelForCausalLM

        trust = bool(spec.get("trust_remote_code"))
        return (
            AutoModelForCausalLM.from_pretrained(wanted["base_model_path"], trust_remote_code=trust).to(device).eval()
        )

    try:
        return compare(wanted, tokenizer, model, device, load_base)
    except Exception as exc:
        return {"detail": f"The base vs fine-tuned comparison failed: {type(exc).__name__}: {exc}", "pairs": []}
