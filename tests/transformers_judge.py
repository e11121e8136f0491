"""The judge of the differential test: can transformers itself load and train each model, offline and without a
model's own code? Run as a child process (`python -m tests.transformers_judge < cases.json`), it reads
{"case": {"target": folder or repo id, "cache_dir": ..., "revision": ...}, ...} on stdin and prints
{"case": {"loads": bool, "stage": ..., "error": ...}, ...} as JSON.

"Loads" means what training needs: the config, a tokenizer that encodes text into more than special tokens, and
a model whose every weight came from the checkpoint (none missing, none of the wrong shape).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

SAMPLE = "The quick brown fox jumps over the lazy dog."


def judge(target: str, cache_dir: str | None = None, revision: str | None = None) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
        _, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **common)
        gaps = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if gaps:
            return {"loads": False, "stage": stage, "error": f"weights not loaded: {sorted(map(str, gaps.items()))}"}
    except Exception as exc:  # the judge reports every failure of transformers as "does not load"
        return {"loads": False, "stage": stage, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"loads": True, "stage": "done", "error": ""}


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.simplefilter("ignore")
    from transformers.utils import logging

    logging.set_verbosity_error()
    cases = json.load(sys.stdin)
    print(json.dumps({case: judge(**spec) for case, spec in cases.items()}))


if __name__ == "__main__":
    main()
