"""Base model vs fine-tuned model on the run's eval rows, inside the validation child
(projects.runs.validation.inference_child).

The same tokenizer (the fine-tuned output's, which carries the chat template it trained with), the same prompts,
greedy decoding with the same bound on new tokens, and the eval loss computed the same way for both models and as
the trainer computes it during training (so the report and the run's last eval point agree): the examples in order,
packed when the run packs, in batches of the run's batch size, each batch's mean token loss on the completions (the
tokens training learns) weighted by the batch's rows. No Django; torch is imported by the caller's process only.

Spec (the "before_after" key of the child's spec): {"rows": [...], "format": str, "hyperparameters": {...} (the
run's), "max_new_tokens": int, "base_model_path": path}
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

from projects.datasets.eval_split import reference_answer
from projects.hyperparameters import Hyperparameters

MAX_LOSS_ROWS = 200  # rows the eval loss is measured on (the eval set's first ones); enough to compare two models
MAX_PROMPT_CHARS = 4000


def prompts_of(rows: list[dict], fmt: str, tokenizer: Any, count: int) -> list[tuple[str, str | None]]:
    """(prompt, reference answer or None) for the first `count` rows that give a prompt."""
    from projects.datasets import prompt_text

    found = []
    for row in rows:
        if len(found) >= count:
            break
        prompt = prompt_text(row, fmt, tokenizer)
        reference = reference_answer(row, fmt)
        if not prompt and fmt == "text":
            text = str(row.get("text", ""))
            prompt, reference = text[: max(1, len(text) // 2)][:MAX_PROMPT_CHARS], text[len(text) // 2 :]
        if prompt:
            found.append((prompt[:MAX_PROMPT_CHARS], reference))
    return found


def eval_loss(model: Any, batches: list[dict[str, Any]], device: str) -> float | None:
    """The rows-weighted mean of the batches' losses (what the Trainer's evaluation loop reports)."""
    import torch

    total, rows = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            count = len(batch["input_ids"])
            loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
            if loss is not None and math.isfinite(float(loss)):
                total, rows = total + float(loss) * count, rows + count
    return total / rows if rows else None


def eval_batches(examples: list[dict], pad_token_id: int, limit: int, batch_size: int, packing: bool) -> list[dict]:
    """The eval examples batched as the trainer batches its eval set (projects.trainer.run.build_datasets)."""
    from projects.trainer.batching import REAL_TOKENS_KEY, PackedCollator, PaddedCollator, pack_examples

    data = pack_examples(examples, limit) if packing else examples
    collate = (PackedCollator if packing else PaddedCollator)(pad_token_id)
    batches = []
    for start in range(0, len(data), max(1, batch_size)):
        batch = collate(data[start : start + max(1, batch_size)])
        batch.pop(REAL_TOKENS_KEY, None)
        batches.append(batch)
    return batches


def answers(model: Any, tokenizer: Any, prompts: list[str], device: str, max_new_tokens: int, limit: int) -> list[str]:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt")
            inputs = {key: value[:, -limit:].to(device) for key, value in inputs.items()}
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            out.append(tokenizer.decode(generated[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


def _perplexity(loss: float | None) -> float | None:
    return math.exp(loss) if loss is not None and loss < 700 else None


def compare(spec: dict, tokenizer: Any, tuned: Any, device: str, load_base) -> dict:
    """The report's "before_after" dict. `tuned` is the loaded fine-tuned model (released here before the base is
    loaded, so the two are never in memory together); `load_base()` loads the base model."""
    from projects.datasets import build_examples
    from projects.trainer.batching import trainable_examples

    started = time.monotonic()
    rows = [row for row in spec.get("rows") or [] if isinstance(row, dict)]
    fmt = str(spec.get("format") or "")
    values = Hyperparameters.from_stored(spec.get("hyperparameters") or {})
    limit = values.max_seq_length
    new_tokens = int(spec.get("max_new_tokens") or 32)
    pairs = prompts_of(rows, fmt, tokenizer, values.eval_prompts)
    prompts = [prompt for prompt, _ in pairs]
    examples = trainable_examples(build_examples(rows[:MAX_LOSS_ROWS], fmt, tokenizer, limit), limit)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = eval_batches(examples, pad, limit, values.batch_size, values.packing)
    result: dict[str, Any] = {"eval_rows": len(rows), "detail": ""}
    result["tuned_eval_loss"] = eval_loss(tuned, batches, device)
    tuned_answers = answers(tuned, tokenizer, prompts, device, new_tokens, limit)
    del tuned
    gc.collect()
    base_answers = [""] * len(prompts)
    try:
        base = load_base()
    except Exception as exc:  # the report still shows the fine-tuned side
        result["detail"] = f"The base model did not load for the comparison: {type(exc).__name__}: {exc}"
        result["base_eval_loss"] = None
    else:
        result["base_eval_loss"] = eval_loss(base, batches, device)
        base_answers = answers(base, tokenizer, prompts, device, new_tokens, limit)
        del base
        gc.collect()
    result["base_perplexity"] = _perplexity(result["base_eval_loss"])
    result["tuned_perplexity"] = _perplexity(result["tuned_eval_loss"])
    result["pairs"] = [
        {"prompt": prompt, "reference": reference, "base": base_text, "tuned": tuned_text}
        for (prompt, reference), base_text, tuned_text in zip(pairs, base_answers, tuned_answers, strict=True)
    ]
    result["seconds"] = round(time.monotonic() - started, 3)
    return result
