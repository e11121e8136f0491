"""The DPO preference check, run in a child process (`python -m projects.runs.validation.child preference SPEC.json`).

On held-out pairs, how often a model finds the chosen answer more likely than the rejected one: the summed
log-probability of each answer's tokens after the prompt. Measured with the base model (before training) and the
tuned one (after).

SPEC: {"base_model_path": path, "model_dir": path|null, "adapter_dir": path|null, "tokenizer_dir": path,
       "pairs": [pair rows], "trust_remote_code": bool}
Result: {"pairs", "before", "after", "margin_before", "margin_after"} (shares in [0, 1], mean margins in nats), or
{"error": "..."}.
"""

from __future__ import annotations

from typing import Any

from projects.datasets.pairs import render_pair


def _common(left: list[int], right: list[int]) -> int:
    count = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        count += 1
    return count


def answer_logprob(model: Any, tokenizer: Any, prompt: str, full: str, device: str) -> float:
    """The summed log-probability of the tokens of `full` after those it shares with `prompt`."""
    import torch

    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(full)["input_ids"]
    start = max(_common(prompt_ids, ids), 1)  # the first token has no prediction
    if start >= len(ids):
        return 0.0
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=device)).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(ids[1:], device=device)
    picked = logprobs.gather(1, targets.unsqueeze(1)).squeeze(1)
    return float(picked[start - 1 :].sum())


def preference(model: Any, tokenizer: Any, pairs: list[dict], device: str) -> tuple[float, float]:
    """(share of pairs whose chosen answer is more likely, mean log-probability margin chosen - rejected)."""
    wins, margins = 0, []
    for row in pairs:
        prompt, with_chosen, with_rejected = render_pair(tokenizer, row)
        margin = answer_logprob(model, tokenizer, prompt, with_chosen, device) - answer_logprob(
            model, tokenizer, prompt, with_rejected, device
        )
        wins += margin > 0
        margins.append(margin)
    return wins / len(pairs), sum(margins) / len(margins)


def run(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = bool(spec.get("trust_remote_code"))
    pairs = spec["pairs"]
    if not pairs:
        return {"error": "No held-out pairs to check."}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"], trust_remote_code=trust)
    base = AutoModelForCausalLM.from_pretrained(spec["base_model_path"], trust_remote_code=trust).to(device).eval()
    before, margin_before = preference(base, tokenizer, pairs, device)
    if spec.get("model_dir"):
        del base
        tuned = AutoModelForCausalLM.from_pretrained(spec["model_dir"], trust_remote_code=trust).to(device).eval()
    else:
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(base, spec["adapter_dir"]).to(device).eval()
    after, margin_after = preference(tuned, tokenizer, pairs, device)
    return {
        "pairs": len(pairs),
        "before": before,
        "after": after,
        "margin_before": margin_before,
        "margin_after": margin_after,
    }
