"""The base model a trainer child trains: loaded with its tokenizer, and the spec's sequence length fitted to it."""

from __future__ import annotations

import pickle
import sys
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from projects.trainer.device import Placement
from projects.trainer.errors import TrainerError
from projects.trainer.spec import TrainerSpec


def load_model(spec: TrainerSpec, placement: Placement) -> tuple[Any, Any, torch.dtype | None]:
    """Tokenizer and model. Weights load as fp32 (mixed precision keeps fp32 master weights), except a LoRA
    base on a GPU, which stays frozen and loads in the compute dtype. `.bin` weights load with
    weights_only=True only. Returns the base's own dtype too, for saving a full model the same size."""
    path = str(spec.model_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        base_dtype = getattr(config, "dtype", None)
        if isinstance(base_dtype, str):
            base_dtype = getattr(torch, base_dtype, None)
        dtype = torch.float32
        if spec.method == "lora" and not placement.use_cpu and placement.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if placement.precision == "bf16" else torch.float16
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=dtype, trust_remote_code=spec.trust_remote_code, weights_only=True
        )
    except pickle.UnpicklingError:
        raise TrainerError(
            "weights_invalid",
            f"Model format invalid: the .bin weights of '{spec.model_name}' in {spec.model_named} hold more than tensors "
            "(pickled objects that could run code), so they were not loaded (torch.load with weights_only=True).",
            "Use a copy of the model with .safetensors weights (most Hub models ship them), or convert the .bin "
            "file to safetensors on a trusted machine.",
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainerError(
            "model_load_failed",
            f"Could not load model '{spec.model_name}' from {spec.model_named}: {str(exc).replace(path, spec.model_named)}",
            "Validate the model again (its files may be damaged or incomplete) and re-download it if needed.",
        )
    model.config.use_cache = False  # training needs no KV cache, and with one packed examples would see each other
    # What the saved config and an adapter's config name as the base: the folder as the member knows it, not the
    # descriptor's path it was read by.
    model.config.name_or_path = model.name_or_path = tokenizer.name_or_path = spec.model_named
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise TrainerError(
                "model_format_invalid",
                f"Model format invalid: the tokenizer of '{spec.model_name}' has neither a pad nor an eos token.",
                "Use a model whose tokenizer defines an eos token (batches must be padded with something).",
            )
        tokenizer.pad_token = tokenizer.eos_token
    if base_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        base_dtype = None
    return tokenizer, model, base_dtype


def within_context(spec: TrainerSpec, config: Any) -> tuple[TrainerSpec, int | None]:
    """The spec with max_seq_length cut to the model's context length when it is longer (a longer sequence would
    run past the positions the model was trained on), and the value it had; (spec, None) when it fits."""
    context = getattr(config, "max_position_embeddings", None)
    wanted = spec.hyperparameters.max_seq_length
    if not isinstance(context, int) or isinstance(context, bool) or context <= 0 or wanted <= context:
        return spec, None
    print(
        f"max_seq_length {wanted} is above the context length of '{spec.model_name}' ({context} tokens): "
        f"sequences are cut at {context}.",
        file=sys.stderr,
        flush=True,
    )
    hyperparameters = spec.hyperparameters.model_copy(update=dict(max_seq_length=context))
    return spec.model_copy(update={"hyperparameters": hyperparameters}), wanted
