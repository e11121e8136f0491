"""What the trainer leaves in the output directory: checkpoints, the final model and mtm_manifest.json.

Layout (output_dir):
- full fine-tune: a complete HF model at the top: config.json, generation_config.json, model*.safetensors,
  tokenizer files, mtm_manifest.json.
- LoRA: the adapter at the top (adapter_config.json, adapter_model.safetensors, tokenizer files,
  mtm_manifest.json) and, when merge_after_training, the merged complete model in `merged/` (config.json,
  generation_config.json, model*.safetensors, tokenizer files). The top holds no config.json, so nothing
  mistakes the adapter folder for a full model.
- checkpoint-N/ folders (Trainer checkpoints, at most save_total_limit of them) for resuming.
The manifest's "layout" says which folder to load: "model_dir" (relative, "." or "merged"; null for an
unmerged adapter) and "adapter_dir" (relative, or null for a full fine-tune).
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

from projects.trainer.errors import TrainerError
from projects.trainer.spec import LATEST

MANIFEST_NAME = "mtm_manifest.json"
RUN_MARKER = ".mtm-run"  # in the output directory while a run trains there; holds the run id
MERGED_DIR = "merged"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N folders that hold a trainer_state.json, lowest step first."""
    found = []
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and child.is_dir() and (child / "trainer_state.json").is_file():
                found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint folder to resume from: None, the highest checkpoint-N for "latest", or a given folder."""
    if resume is None:
        return None
    if resume == LATEST:
        found = checkpoints(output_dir)
        if not found:
            raise TrainerError(
                "no_checkpoint",
                f"Cannot resume: there is no checkpoint-N folder with a trainer_state.json in {output_dir}.",
                "Start a fresh run instead (without resume), or check that the output directory is the one the "
                "earlier run wrote to.",
            )
        return found[-1]
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise TrainerError(
            "no_checkpoint",
            f"Cannot resume from {path}: it is not a Trainer checkpoint folder (no trainer_state.json).",
            "Resume from 'latest' or from a checkpoint-N folder in the output directory.",
        )
    return path


def library_versions() -> dict[str, str]:
    import accelerate
    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }


def save_full_model(model: Any, tokenizer: Any, folder: Path, dtype: Any = None) -> None:
    """A complete, loadable HF folder: config, generation config, safetensors weights, tokenizer.
    `dtype` (the base model's own) keeps a bf16 base from coming back as a twice larger fp32 model."""
    from transformers import GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    if dtype is not None and next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    model.config.use_cache = True  # the Trainer turns the KV cache off for training; generation wants it
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if not (folder / "generation_config.json").is_file():
        GenerationConfig.from_model_config(model.config).save_pretrained(folder)


def save_final(
    model: Any, tokenizer: Any, output_dir: Path, method: str, merge: bool, dtype: Any = None
) -> dict[str, str | None]:
    """Write the final model as the module docstring lays out; returns the manifest's "layout"."""
    if method == "full":
        save_full_model(model, tokenizer, output_dir, dtype)
        return {"model_dir": ".", "adapter_dir": None}
    model.save_pretrained(output_dir)  # a PeftModel writes only the adapter
    tokenizer.save_pretrained(output_dir)
    if not merge:
        return {"model_dir": None, "adapter_dir": "."}
    merged = model.merge_and_unload()
    save_full_model(merged, tokenizer, output_dir / MERGED_DIR, dtype)
    return {"model_dir": MERGED_DIR, "adapter_dir": "."}
